"""``hessian-lr dashboard DIR``: browse a run's Optuna studies with optuna-dashboard (the
``dashboard`` extra), served on localhost only by default.

The storage is the one the run used: ``storage`` in ``DIR/config.json`` when set (an RDB URL, or a
journal path — relative paths are tried from the current folder, then from DIR), else
``DIR/optuna.journal``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["resolve_storage", "open_storage", "build_app", "serve_dashboard"]

INSTALL_HINT = "optuna-dashboard is not installed: pip install 'hessian-lr[dashboard]'"


def resolve_storage(run_dir: Path) -> str:
    """The run's storage as an RDB URL (contains ``://``) or an existing journal file path."""
    run_dir = Path(run_dir)
    spec = None
    config_path = run_dir / "config.json"
    if config_path.exists():
        try:
            spec = json.loads(config_path.read_text(encoding="utf-8")).get("storage")
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {config_path}: {exc}") from None
    if spec and "://" in spec:
        return spec
    candidates = [Path(spec), run_dir / spec] if spec else [run_dir / "optuna.journal"]
    for path in candidates:
        if path.is_file():
            return str(path)
    raise ValueError(f"no Optuna storage for {run_dir}: {' or '.join(map(str, candidates))} not found "
                     "(run hessian-lr compare --out DIR first)")


def _optuna_dashboard() -> Any:
    try:
        import optuna_dashboard
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    return optuna_dashboard


def open_storage(spec: str) -> Any:
    """An Optuna storage object for ``spec`` (journal files need one; URLs are opened by Optuna)."""
    import optuna

    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    from hessian_lr.tuning.study import journal_storage

    return journal_storage(spec)


def build_app(run_dir: Path) -> Any:
    """The dashboard as a WSGI application (what ``serve_dashboard`` serves)."""
    dashboard = _optuna_dashboard()
    return dashboard.wsgi(open_storage(resolve_storage(run_dir)))


def serve_dashboard(run_dir: Path, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the run's studies at ``http://host:port/`` until interrupted (Ctrl-C)."""
    dashboard = _optuna_dashboard()
    storage = open_storage(resolve_storage(run_dir))
    print(f"optuna-dashboard for {run_dir} at http://{host}:{port}/ (Ctrl-C to stop)")
    dashboard.run_server(storage, host=host, port=port)
