"""The dashboard: storage resolution, the missing-package error, and one GET through the WSGI app."""

from __future__ import annotations

import io
import json
import sys
import wsgiref.util

import optuna
import pytest

from hessian_lr.dashboard import build_app, resolve_storage, serve_dashboard
from hessian_lr.tuning.storage import journal_storage


def _journal_with_a_study(path):
    study = optuna.create_study(study_name="mnist1d-mlp.adam.x", storage=journal_storage(path))
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=2)


def test_default_storage_is_the_run_journal(tmp_path):
    with pytest.raises(ValueError, match="no Optuna storage"):
        resolve_storage(tmp_path)
    (tmp_path / "optuna.journal").write_text("")
    assert resolve_storage(tmp_path) == str(tmp_path / "optuna.journal")


def test_storage_recorded_in_config_json(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"storage": "postgresql+psycopg2://u@h:5/db"}))
    assert resolve_storage(tmp_path) == "postgresql+psycopg2://u@h:5/db"
    (tmp_path / "config.json").write_text(json.dumps({"storage": "studies.journal"}))
    with pytest.raises(ValueError, match="studies.journal"):
        resolve_storage(tmp_path)
    (tmp_path / "studies.journal").write_text("")
    monkeypatch.chdir("/")
    assert resolve_storage(tmp_path) == str(tmp_path / "studies.journal")  # relative to the run folder
    (tmp_path / "config.json").write_text(json.dumps({"storage": None}))
    with pytest.raises(ValueError, match="optuna.journal"):
        resolve_storage(tmp_path)


def test_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "optuna.journal").write_text("")
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    with pytest.raises(ValueError, match=r"pip install 'hessian-lr\[dashboard\]'"):
        serve_dashboard(tmp_path, port=1)


def test_app_serves_the_run_studies(tmp_path):
    pytest.importorskip("optuna_dashboard")
    _journal_with_a_study(tmp_path / "optuna.journal")
    app = build_app(tmp_path)
    for path, expect in (("/", None), ("/api/studies", b"mnist1d-mlp.adam.x")):
        environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
        wsgiref.util.setup_testing_defaults(environ)
        status = []
        body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
        assert status[0].startswith(("200", "302")), (path, status)
        if expect:
            assert expect in body


def test_a_port_out_of_range_or_in_use_is_one_line_before_serving(tmp_path, capsys):
    import socket

    from hessian_lr.cli import main

    _journal_with_a_study(tmp_path / "optuna.journal")
    assert main(["dashboard", str(tmp_path), "--port", "70000"]) == 2
    assert "argument --port: expected an integer in [1, 65535]" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["dashboard", str(tmp_path), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert main(["dashboard", str(tmp_path), "--host", "no-such-host.invalid"]) == 2
    assert "does not resolve" in capsys.readouterr().err
