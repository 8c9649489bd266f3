"""The command line: one-line errors with exit code 2, and a real tiny comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hessian_lr.cli import main


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hessian_lr.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--optimizers", "adam,nope"], "unknown optimizer 'nope'"),
        (["--trials", "0"], "--trials"),
        (["--epochs", "-3"], "--epochs"),
        (["--lr-low", "0.1", "--lr-high", "0.01"], "lr range"),
        (["--workload", "imagenet"], "unknown workload"),
        (["--threads", "zero"], "--threads"),
        (["--bogus-flag"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, args, fragment):
    code = main(["compare", "--out", str(tmp_path / "run"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hessian-lr: error:") and fragment in err
    assert "Traceback" not in err


NOT_JOURNAL = "hello, not a journal\n"


@pytest.mark.parametrize("args, fragment", [
    (["--lr-high", "inf"], "argument --lr-high: expected a finite number"),
    (["--lr-high", "1e309"], "argument --lr-high: expected a finite number"),  # inf as a float
    (["--lr-low", "nan"], "argument --lr-low: expected a finite number"),
    (["--lr-low", "-1e-3"], "argument --lr-low"),
    (["--workers", "100000000"], "argument --workers: expected an integer in [0, 256]"),
    (["--seed", "4294967296"], "argument --seed: expected an integer in [0, 4294967295]"),
    (["--seed", "1.5"], "argument --seed"),
    (["--threads", "100000"], "argument --threads: expected an integer in [1, 1024]"),
    (["--batch-trials", "100000"], "batch_trials must be an integer in [1, 1024]"),
    (["--seeds", "100000"], "seeds must be an integer in [1, 1000]"),
    (["--trials", "10000000"], "argument --trials"),
    (["--study", ""], "study must be a non-empty name"),
    (["--storage", ""], "storage must be a journal path or a database URL"),
    (["--storage", "foo://bar"], "--storage foo://bar: unknown kind of database 'foo'"),
    (["--storage", "sqlite:////nonexistent-folder/x.db"], "the folder /nonexistent-folder does not exist"),
    (["--storage", "sqlite://"], "an in-memory database would lose the studies"),
    (["--storage", "postgresql+psycopg2://u@127.0.0.1:1/db"], "cannot reach the storage postgresql+psycopg2://u@127.0.0.1:1/db"),
    (["--storage", "{tmp}"], "is a folder; name a file"),
    (["--storage", "/proc/hessian-lr.journal"], "cannot create the journal /proc/hessian-lr.journal"),
    (["--storage", "{tmp}/not-a-journal"], "is not an Optuna journal"),
])
def test_bad_values_and_storages_are_refused_before_anything_is_created(tmp_path, capsys, args, fragment):
    (tmp_path / "not-a-journal").write_text(NOT_JOURNAL)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = main(["compare", "--out", str(tmp_path / "run"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("hessian-lr: error:") and fragment in err, err
    assert not (tmp_path / "run").exists()  # refused before the run folder (or a study) was made
    assert (tmp_path / "not-a-journal").read_text() == NOT_JOURNAL


@pytest.mark.parametrize("out", ["", "   "])
def test_an_empty_out_is_refused_not_the_current_folder(tmp_path, capsys, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--out", out, "--quiet"]) == 2
    assert "argument --out: expected a folder path" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    (tmp_path / "c.toml").write_text(f"out = {out!r}\n".replace("'", '"'))
    assert main(["compare", "--config", "c.toml", "--quiet"]) == 2
    assert "out must be a folder path" in capsys.readouterr().err


def test_storage_errors_through_the_console_script_are_one_line_without_optuna_warnings(tmp_path):
    for args in (["compare", "--out", str(tmp_path / "run"), "--storage", "sqlite:////nonexistent-folder/x.db"],
                 ["worker", "--storage", "foo://bar"],
                 ["worker", "--storage", "postgresql+psycopg2://u@127.0.0.1:1/db"],
                 ["worker", "--storage", str(tmp_path / "none.journal")]):
        proc = run_cli(*args)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("hessian-lr: error:") and "Warning" not in proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_run_on_a_database_shows_no_optuna_warnings(tmp_path):
    """Heartbeats and the retry callback are experimental in Optuna, and asking trials outside
    Study.optimize warns with heartbeats on: none of it reaches the user."""
    proc = run_cli("compare", "--out", str(tmp_path / "run"), "--storage", f"sqlite:///{tmp_path / 'studies.db'}",
                   "--optimizers", "adam", "--trials", "2", "--epochs", "1", "--seeds", "1", "--quiet")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_unwritable_out_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["compare", "--out", str(blocker / "sub"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write to output folder" in err


@pytest.mark.parametrize(
    "content, fragment",
    [(None, "cannot read config file"), ("trials = [", "invalid TOML"), ("colour = 'red'", "unknown key"),
     ("trials = 0", "trials must be an integer in [1, "), ('ablation = "false"', "ablation must be true or false"),
     ('batch_startup = "no"', "batch_startup must be true or false"), ("optimizers = [1, 2]", "must be names"),
     ("storage = 5", "storage in config file"), ("seed = true", "seed must be an integer"),
     ("[space.adam]\nfoo = { low = 1, high = 2 }", "'foo' is not a hyperparameter of this optimizer"),
     ("[space.adam]\nlr = { low = 0.1, high = 0.01 }", "low must be < high"),
     ('[space.adam]\n"betas[1]" = { low = 0.9, high = 1.0 }', "the optimizer refuses"),
     ("[space.sgd]\nlr = 0.1", "not among the optimizers")],
)
def test_bad_config_file(tmp_path, capsys, content, fragment):
    path = tmp_path / "c.toml"
    if content is not None:
        path.write_text(content)
    assert main(["compare", "--out", str(tmp_path / "run"), "--config", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err


def test_console_script_errors_without_traceback(tmp_path):
    proc = run_cli("compare", "--out", str(tmp_path), "--optimizers", "sgdx")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "unknown optimizer" in proc.stderr


def test_help_explains_every_option():
    proc = run_cli("compare", "--help")
    assert proc.returncode == 0
    for option in ("--trials", "--epochs", "--seed", "--optimizers", "--out", "--storage", "--config", "--threads"):
        assert option in proc.stdout


def test_config_file_is_read_and_flags_override_it(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('trials = 1\nepochs = 5\noptimizers = "adam"\nlr-low = 1e-3\n')
    out = tmp_path / "run"
    assert main(["compare", "--config", str(config), "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "results.json").read_text())["config"]
    assert saved["trials"] == 1 and saved["epochs"] == 1 and saved["optimizers"] == ["adam"]
    assert saved["lr_low"] == 1e-3 and saved["threads"] == 1


def test_report_on_a_missing_run_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("file, content, fragment", [
    ("results.json", {"optimizers": 5}, "results.json is not a valid results file: config must be present"),
    ("results.json", [1, 2], "must be a table"),
    ("results.json", "not json {", "not JSON"),
    ("results.json", {"config": {"workload": "mnist1d-mlp", "seed": 0}, "versions": {}, "optimizers": {}},
     "config.epochs must be present"),
    ("results.json", {"config": {"workload": "mnist1d-mlp", "seed": 0, "epochs": 2}, "versions": {}, "optimizers": 5},
     "optimizers must be a table"),
    ("results.json", {"config": {"workload": "w", "seed": 0, "epochs": 2}, "versions": {},
                      "optimizers": {"adam": {"best_lr": 0.1, "best_value": "low", "trials": [], "final": {}}}},
     "optimizers.adam.best_value must be a number"),
    ("suite.json", {"workloads": 3, "config": {}, "versions": {}}, "suite.json is not a valid suite file: workloads"),
])
def test_report_on_a_file_of_the_wrong_shape_names_it(tmp_path, capsys, file, content, fragment):
    (tmp_path / file).write_text(content if isinstance(content, str) else json.dumps(content))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and str(tmp_path / file) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [file]  # nothing written


def test_report_of_a_real_run_passes_the_shape_check(tmp_path):
    from hessian_lr.results import check_results

    out = tmp_path / "run"
    assert main(["compare", "--out", str(out), "--optimizers", "adam", "--trials", "2", "--epochs", "1", "--seeds", "2",
                 "--quiet"]) == 0
    check_results(json.loads((out / "results.json").read_text()))
    assert main(["report", str(out)]) == 0


@pytest.mark.skipif(not os.environ.get("PATH"), reason="needs a shell environment")
def test_tiny_compare_through_the_console_script(tmp_path):
    proc = run_cli("compare", "--trials", "2", "--epochs", "2", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert "Tuned comparison" in proc.stdout
    for name in ("results.json", "trials.csv", "comparison.png", "report.md"):
        assert (tmp_path / "run" / name).stat().st_size > 0


@pytest.mark.parametrize("args, fragment", [(["--estimators", "grad-diff,oracle"], "unknown estimator(s) oracle"),
                                            (["--workload", "cifar"], "unknown workload"),
                                            (["--lr", "-1"], "argument --lr: expected a finite number"),
                                            (["--lr", "inf"], "argument --lr: expected a finite number in (0, 10]"),
                                            (["--lr", "1e300"], "argument --lr: expected a finite number in (0, 10]"),
                                            (["--epochs", "10000000"], "argument --epochs"),
                                            (["--reference-probes", "-1"], "argument --reference-probes"),
                                            (["--exact-rows", "0"], "argument --exact-rows"),
                                            (["--seed", "-1"], "argument --seed"),
                                            (["--out", ""], "argument --out")])
def test_fidelity_bad_input(tmp_path, capsys, args, fragment):
    assert main(["fidelity", "--out", str(tmp_path / "fid"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err
    assert not (tmp_path / "fid").exists()


def test_fidelity_writes_its_outputs(tmp_path, capsys):
    code = main(["fidelity", "--out", str(tmp_path), "--epochs", "1", "--estimators", "grad-diff,squared-grad",
                 "--reference-probes", "0", "--quiet"])
    assert code == 0
    data = json.loads((tmp_path / "fidelity.json").read_text())
    assert set(data["estimators"]) >= {"grad-diff", "squared-grad"}
    for metrics in data["estimators"].values():
        for key in ("spearman", "pearson", "log_pearson", "median_rel_error"):
            assert len(metrics[key]) == len(data["checkpoints"])
    assert (tmp_path / "fidelity.png").exists() and "spearman" in capsys.readouterr().out.lower()


USER_MODULE = '''
"""A researcher's own optimizer, written against torch.optim.Optimizer."""
import torch


class SignSGD(torch.optim.Optimizer):
    """Sign descent with momentum: p -= lr * sign(m), m = beta m + (1 - beta) g."""

    def __init__(self, params, lr=1e-3, beta=0.9):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        super().__init__(params, {"lr": lr, "beta": beta})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                m.mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])
                p.add_(m.sign(), alpha=-group["lr"])


def sign_sgd(params, lr, **hyperparameters):
    return SignSGD(params, lr=lr, **hyperparameters)


not_an_arm = 42
'''


@pytest.fixture
def user_module(tmp_path):
    (tmp_path / "my_optimizers.py").write_text(USER_MODULE)
    (tmp_path / "broken_module.py").write_text("raise RuntimeError('boom')\n")
    names = ("my_optimizers", "broken_module")
    for name in names:  # this folder's modules, never another test's of the same name
        sys.modules.pop(name, None)
    yield tmp_path
    for name in names:
        sys.modules.pop(name, None)


def test_a_user_arm_by_import_path_runs_through_the_console_script(user_module):
    """The module is found in the current folder (as python -m would), tuned with a space of its
    own from the TOML config, and results.json says where the arm came from."""
    (user_module / "run.toml").write_text(
        'optimizers = "adam,my_optimizers:SignSGD,my_optimizers:sign_sgd"\ntrials = 2\nepochs = 1\nseeds = 2\n'
        '[space."my_optimizers:SignSGD"]\nlr = { low = 1e-4, high = 1e-2, log = true }\n'
        'beta = { low = 0.5, high = 0.99 }\n')
    proc = run_cli("compare", "--config", "run.toml", "--out", "run", "--quiet", cwd=user_module)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((user_module / "run" / "results.json").read_text())
    assert list(data["optimizers"]) == ["adam", "my_optimizers:SignSGD", "my_optimizers:sign_sgd"]
    mine = data["optimizers"]["my_optimizers:SignSGD"]
    assert set(mine["best_params"]) == {"lr", "beta"} and 0.5 <= mine["best_params"]["beta"] <= 0.99
    assert mine["source"]["source"] == "my_optimizers:SignSGD"
    assert mine["source"]["packages"]["my_optimizers"] == {"distribution": None, "version": None}
    assert all(not run["diverged"] for run in mine["final"]["seeds"])
    assert "my_optimizers:SignSGD" in (user_module / "run" / "report.md").read_text()


@pytest.mark.parametrize("name, fragment", [
    ("no_such_module:thing", "cannot import module 'no_such_module'"),
    ("my_optimizers:missing", "has no attribute 'missing'"),
    ("my_optimizers:not_an_arm", "is a int, not an Arm or an optimizer factory"),
    ("broken_module:x", "importing module 'broken_module' raised RuntimeError: boom"),
    ("my_optimizers:", "an import path is 'package.module:name'"),
])
def test_bad_import_paths_are_one_line_and_exit_code_2(user_module, monkeypatch, capsys, name, fragment):
    monkeypatch.chdir(user_module)
    monkeypatch.syspath_prepend(str(user_module))
    code = main(["compare", "--out", str(user_module / "run"), "--quiet", "--optimizers", f"adam,{name}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("hessian-lr: error:") and fragment in err, err
    assert not (user_module / "run" / "optuna.journal").exists()  # refused before anything was created


def test_a_three_hyperparameter_space_from_toml(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('optimizers = "adam,hessian-adam"\ntrials = 3\nepochs = 1\nseeds = 1\nablation = false\n'
                      '[space.hessian-adam]\nlr = { low = 1e-4, high = 1e-1, log = true }\n'
                      'curvature_beta = { low = 0.9, high = 0.9999 }\n"betas[1]" = { low = 0.9, high = 0.9999 }\n')
    out = tmp_path / "run"
    assert main(["compare", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "results.json").read_text())
    hessian = data["optimizers"]["hessian-adam"]
    assert set(hessian["space"]) == {"lr", "curvature_beta", "betas[1]"}
    assert set(hessian["best_params"]) == {"lr", "curvature_beta", "betas"}
    assert hessian["best_params"]["betas"][0] == 0.9  # the other item keeps Adam's default
    assert data["optimizers"]["adam"]["space"] == {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}
    header = (out / "trials.csv").read_text().splitlines()[0].split(",")
    assert header == ["optimizer", "study", "number", "lr", "curvature_beta", "betas[1]", "value", "state"]
    for trial in hessian["trials"]:
        assert 0.9 <= trial["params"]["curvature_beta"] <= 0.9999 and 0.9 <= trial["params"]["betas[1]"] <= 0.9999
    report = (out / "report.md").read_text()
    assert "curvature_beta" in report and "betas[1]" in report
