"""A workload of the user's own, named by import path: from the console script, a TOML
``[workload]`` table, ``hessian_lr.compare``, a suite and a worker — and every bad path refused
in one line, exit 2, before anything is created."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from announced import Announced

from hessian_lr.cli import main
from hessian_lr.workloads.registry import _workload_from_path

# The user's file: a factory that notes the options it was called with (in the process that calls it).
USER_MODULE = '''
import json
from functools import partial
from pathlib import Path

from hessian_lr.workloads import Workload
from hessian_lr.workloads.digits import digits_splits
from hessian_lr.workloads.mlp import mlp


def tiny_digits(width=8, epochs=2):
    with open(Path(__file__).parent / "calls.jsonl", "a") as fh:
        fh.write(json.dumps({"width": width, "epochs": epochs}) + "\\n")
    return Workload(name="tiny-digits", description=f"digits, MLP 64-{width}-10", load_data=digits_splits,
                    build_model=partial(mlp, (64, width, 10)), batch_size=64, epochs=epochs)


not_a_workload = 3


def returns_junk():
    return "junk"
'''

RUN = ["--optimizers", "adam", "--trials", "2", "--seeds", "1", "--no-ablation", "--workers", "1", "--quiet"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A folder holding the user's module, as the current folder."""
    (tmp_path / "user_workloads.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the import adds this folder: not for the next test
    _workload_from_path.cache_clear()
    yield tmp_path
    sys.modules.pop("user_workloads", None)
    _workload_from_path.cache_clear()


def console(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("hessian-lr")
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def calls(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("command, path, message", [
    ("compare", "no_such_module:w", "workload 'no_such_module:w': cannot import module 'no_such_module'"),
    ("compare", "user_workloads:missing", "module 'user_workloads' has no attribute 'missing'"),
    ("compare", "user_workloads:not_a_workload", "workload 'user_workloads:not_a_workload' is a int, not a Workload"),
    ("compare", "user_workloads:returns_junk", "the factory returned a str, not a hessian_lr.workloads.Workload"),
    ("compare", "user_workloads:", "an import path is 'package.module:name'"),
    ("suite", "noisy-quadratic,no_such_module:w", "workload 'no_such_module:w': cannot import module"),
    ("suite", "user_workloads:not_a_workload", "is a int, not a Workload"),
])
def test_a_bad_workload_path_is_one_line_exit_2_and_creates_nothing(folder, capsys, command, path, message):
    flag = "--workload" if command == "compare" else "--workloads"
    code = main([command, flag, path, "--out", str(folder / "run"), *RUN])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("hessian-lr: error: ") and message in err, err
    assert not (folder / "run").exists()


def test_options_a_factory_rejects_are_one_line_exit_2(folder, capsys):
    (folder / "run.toml").write_text('[workload]\nname = "user_workloads:tiny_digits"\ndepth = 3\n')
    code = main(["compare", "--config", str(folder / "run.toml"), "--out", str(folder / "run"), *RUN])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "workload 'user_workloads:tiny_digits': the factory cannot be called with the options {'depth': 3}" in err
    assert not (folder / "run").exists()


def test_the_console_script_runs_a_workload_from_a_file_with_its_toml_options(folder):
    (folder / "run.toml").write_text('[workload]\nname = "user_workloads:tiny_digits"\nwidth = 6\nepochs = 3\n')
    done = console("compare", "--config", "run.toml", "--out", "run", *RUN, cwd=folder)
    assert done.returncode == 0, done.stderr
    assert {"width": 6, "epochs": 3} in calls(folder)  # the options reached the factory
    results = json.loads((folder / "run" / "results.json").read_text())
    assert results["config"]["workload"] == "user_workloads:tiny_digits"
    assert results["config"]["workload_options"] == {"width": 6, "epochs": 3}
    assert results["config"]["epochs"] == 3  # the factory's budget
    assert results["workload_source"] == {"source": "user_workloads:tiny_digits", "module": "user_workloads",
                                          "options": {"width": 6, "epochs": 3},
                                          "packages": {"user_workloads": {"distribution": None, "version": None}}}
    assert len(results["optimizers"]["adam"]["final"]["val_loss_curve"]) == 4


def test_hessian_lr_compare_takes_the_path_and_options(folder):
    import hessian_lr

    results = hessian_lr.compare(workload="user_workloads:tiny_digits", workload_options={"width": 5},
                                 optimizers=["adam"], trials=2, seeds=1, ablation=False, workers=1, out=folder / "py")
    assert results.extra["workload_source"]["options"] == {"width": 5}
    assert {"width": 5, "epochs": 2} in calls(folder)


def test_a_suite_runs_a_workload_of_ones_own_beside_a_registered_one(folder):
    done = console("suite", "--workloads", "noisy-quadratic,user_workloads:tiny_digits", "--no-fidelity",
                   "--out", "suite", *RUN, cwd=folder)
    assert done.returncode == 0, done.stderr
    suite = json.loads((folder / "suite" / "suite.json").read_text())
    assert list(suite["workloads"]) == ["noisy-quadratic", "user_workloads:tiny_digits"]
    mine = suite["workloads"]["user_workloads:tiny_digits"]
    assert mine["workload_source"]["module"] == "user_workloads"
    assert suite["workloads"]["noisy-quadratic"]["workload_source"]["source"] == "registry"


def test_a_worker_resolves_the_workload_from_the_studys_stored_config(folder):
    """The compare holds at its first trial; a worker started in the same folder imports the
    user's module by the path stored with the study and trains the other trial."""
    (folder / "run.toml").write_text('[workload]\nname = "user_workloads:tiny_digits"\nwidth = 7\n')
    args = ["compare", "--config", "run.toml", "--storage", "shared.journal", "--out", "run", *RUN,
            "--no-batch-startup"]
    with Announced(args, cwd=folder, hold=["batch-started *#1"]) as leader:
        leader.wait_for("batch-started *")
        with Announced(["worker", "--storage", "shared.journal", "--study", "compare"], cwd=folder) as worker:
            worker.wait_for("trial-told *")  # then it waits for the compare's trial
            leader.release()
            assert worker.finish() == 0, worker.stderr()
            worker_pid = worker.proc.pid
        assert leader.finish() == 0, leader.stderr()
    results = json.loads((folder / "run" / "results.json").read_text())
    trained = {entry["pid"]: entry["trials"] for entry in results["workers"]}
    assert trained[worker_pid] == {"adam": 1} and sum(t["adam"] for t in trained.values()) == 2
    assert calls(folder).count({"width": 7, "epochs": 2}) >= 2  # the compare's process and the worker's
