"""``hessian-lr dashboard DIR``: browse a run's Optuna studies with optuna-dashboard (the
``dashboard`` extra), served on localhost only by default.

The storage is the one the run used: ``storage`` in ``DIR/config.json`` when set (an RDB URL, or a
journal path — relative paths are tried from the current folder, then from DIR), else
``DIR/optuna.journal``.
"""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path
from typing import Any

__all__ = ["resolve_storage", "open_storage", "build_app", "serve_dashboard", "check_address"]

INSTALL_HINT = "optuna-dashboard is not installed: pip install 'hessian-lr[dashboard]'"


def resolve_storage(run_dir: Path) -> str:
    """The run's storage as an RDB URL (contains ``://``) or an existing journal file path."""
    run_dir = Path(run_dir)
    spec = None
    config_path = run_dir / "config.json"
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {config_path}: {exc}") from None
        spec = config.get("storage") if isinstance(config, dict) else None
        if spec is not None and (not isinstance(spec, str) or not spec.strip()):
            raise ValueError(f"{config_path} is not a run's config: storage must be a path or a URL, got {spec!r}")
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
    """An Optuna storage object for ``spec``, checked first (a storage that cannot be reached or
    used is a ValueError naming it)."""
    from hessian_lr.tuning.storage import check_storage, storage_for

    check_storage(spec, Path("."), must_exist=True)
    return storage_for(spec, Path("."))


def check_address(host: str, port: int) -> None:
    """Refuse, before anything starts, an address the dashboard could not listen on: a port out
    of range, one in use, a host name that does not resolve to this machine."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"--port must be an integer in [1, 65535], got {port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"--host {host!r} does not resolve: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the dashboard's server does
        try:
            sock.bind(address)
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                             + (" (another program uses that port; choose another with --port)"
                                if exc.errno == errno.EADDRINUSE else "")) from None


def build_app(run_dir: Path) -> Any:
    """The dashboard as a WSGI application (what ``serve_dashboard`` serves)."""
    dashboard = _optuna_dashboard()
    return dashboard.wsgi(open_storage(resolve_storage(run_dir)))


def serve_dashboard(run_dir: Path, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the run's studies at ``http://host:port/`` until interrupted (Ctrl-C)."""
    dashboard = _optuna_dashboard()
    storage = open_storage(resolve_storage(run_dir))
    check_address(host, port)
    print(f"optuna-dashboard for {run_dir} at http://{host}:{port}/ (Ctrl-C to stop)")
    try:
        dashboard.run_server(storage, host=host, port=port)
    except OSError as exc:  # the port was taken between the check and the server's bind
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
