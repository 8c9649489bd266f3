"""The workloads read from disk by name: resolution, options, the data folder, the one-line error for
missing data before anything is created, and a compare on fixture files through the console entry."""

from __future__ import annotations

import json

import pytest
from fixtures import SHAKESPEARE_TEXT, write_cifar10, write_shakespeare

from hessian_lr.cli import main
from hessian_lr.pipeline.suite import parse_workloads
from hessian_lr.workloads import WORKLOADS, get_workload
from hessian_lr.workloads.datadir import DATA_ENV
from hessian_lr.workloads.registry import DATA_WORKLOADS, check_data, workload_provenance

NAMES = ("cifar10-resnet18", "cifar10-3c3d", "shakespeare-char-gpt", "shakespeare-char-gpt-cpu")


def test_the_data_workloads_resolve_by_name_but_are_not_in_all():
    assert tuple(DATA_WORKLOADS) == NAMES
    assert [get_workload(name).name for name in NAMES] == list(NAMES)
    assert not set(NAMES) & set(WORKLOADS) and not set(NAMES) & set(parse_workloads("all"))
    assert parse_workloads("noisy-quadratic,cifar10-3c3d") == ("noisy-quadratic", "cifar10-3c3d")


def test_the_gpt_size_is_a_workload_option(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    small = get_workload("shakespeare-char-gpt", {"size": "cpu"})
    assert small.name == "shakespeare-char-gpt-cpu" and small.batch_size == 12
    assert small is get_workload("shakespeare-char-gpt", {"size": "cpu"})  # its data load once per process
    assert workload_provenance("shakespeare-char-gpt", {"size": "cpu"})["options"] == {"size": "cpu"}
    with pytest.raises(ValueError, match="workload 'shakespeare-char-gpt': size must be one of reference, cpu"):
        get_workload("shakespeare-char-gpt", {"size": "huge"})
    with pytest.raises(ValueError, match="workload 'cifar10-3c3d' cannot take the options"):
        get_workload("cifar10-3c3d", {"depth": 3})


def test_the_data_folder_is_part_of_the_workload(monkeypatch, tmp_path):
    write_cifar10(tmp_path / "a", per_file=40, test=10)  # 200 training images: 20 validate
    write_cifar10(tmp_path / "b", per_file=60, test=10)  # 300: 30 validate
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "a"))
    a = get_workload("cifar10-3c3d")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "b"))
    b = get_workload("cifar10-3c3d")
    assert a is not b and workload_provenance("cifar10-3c3d")["data_dir"] == str(tmp_path / "b")
    assert sum(len(y) for _, y in a.data.val()) == 20 and sum(len(y) for _, y in b.data.val()) == 30


def test_check_data_reads_a_data_workloads_files_and_nothing_else(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    check_data("mnist1d-mlp")
    with pytest.raises(ValueError, match=f"shakespeare data file {tmp_path}/shakespeare_char/input.txt: missing"):
        check_data("shakespeare-char-gpt-cpu")
    write_shakespeare(tmp_path, SHAKESPEARE_TEXT * 20)
    check_data("shakespeare-char-gpt-cpu")


@pytest.mark.parametrize("argv", [
    ["compare", "--workload", "cifar10-resnet18"],
    ["suite", "--workloads", "noisy-quadratic,shakespeare-char-gpt"],
])
def test_missing_data_is_one_line_and_exit_2_before_anything_is_created(argv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*argv, "--data-dir", str(tmp_path / "data"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    dataset = "cifar10" if "cifar10" in argv[2] else "shakespeare"
    assert err.startswith(f"hessian-lr: error: {dataset} data file {tmp_path / 'data'}/")
    assert err.rstrip().endswith(f"get it with 'hessian-lr data download {dataset} --data-dir {tmp_path / 'data'}'")
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.slow
def test_a_compare_on_cifar_fixture_files_through_the_command(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "data", per_file=40, test=50)
    out = tmp_path / "run"
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert main(["compare", "--workload", "cifar10-3c3d", "--data-dir", str(tmp_path / "data"), "--out", str(out),
                 "--optimizers", "adam,hessian-adam", "--trials", "2", "--seeds", "2", "--no-ablation", "--steps", "2",
                 "--workers", "1", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["workload"] == "cifar10-3c3d"
    assert results["workload_source"]["data_dir"] == str(tmp_path / "data")
    for arm in ("adam", "hessian-adam"):
        summary = results["optimizers"][arm]
        assert summary["final"]["val_loss"] > 0 and 0 <= summary["test_accuracy_mean"] <= 1
        assert summary["final"]["steps"] == 2
