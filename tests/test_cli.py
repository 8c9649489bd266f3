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


def test_unwritable_out_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["compare", "--out", str(blocker / "sub"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write to output folder" in err


@pytest.mark.parametrize(
    "content, fragment",
    [(None, "cannot read config file"), ("trials = [", "invalid TOML"), ("colour = 'red'", "unknown key"),
     ("trials = 0", "trials must be a positive integer")],
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


@pytest.mark.skipif(not os.environ.get("PATH"), reason="needs a shell environment")
def test_tiny_compare_through_the_console_script(tmp_path):
    proc = run_cli("compare", "--trials", "2", "--epochs", "2", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert "Tuned comparison" in proc.stdout
    for name in ("results.json", "trials.csv", "comparison.png", "report.md"):
        assert (tmp_path / "run" / name).stat().st_size > 0


@pytest.mark.parametrize("args, fragment", [(["--estimators", "grad-diff,oracle"], "unknown estimator(s) oracle"),
                                            (["--workload", "cifar"], "unknown workload"),
                                            (["--lr", "-1"], "--lr must be > 0")])
def test_fidelity_bad_input(tmp_path, capsys, args, fragment):
    assert main(["fidelity", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err


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
