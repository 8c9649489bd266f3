"""The contract from the console script: a loader-fed workload of the user's (an import path)
resumed after a kill at an announced event gives the uninterrupted result; --steps/--eval-every;
--precision bf16 on CPU end to end; a device that is not there is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from announced import Announced, run_ok
from results_helpers import without_timing

from hessian_lr.cli import main

HERE = Path(__file__).parent  # contract_workloads.py is importable from here, as a user's module
ARGS = ["--optimizers", "adam", "--trials", "2", "--seeds", "2", "--epochs", "2", "--workers", "1",
        "--no-batch-startup", "--quiet"]


def _compare(out: Path, workload: str, *extra: str) -> list[str]:
    return ["compare", "--out", str(out), "--workload", workload, *ARGS, *extra]


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("loader-reference")
    run_ok(_compare(out, "contract_workloads:loader_fed"), cwd=HERE)
    return _results(out)


@pytest.mark.parametrize("event", ["epoch *#3", "final-saved *"])
def test_a_loader_fed_workload_killed_at_an_event_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path, event):
    out = tmp_path / "run"
    pattern, _, nth = event.partition("#")
    with Announced(_compare(out, "contract_workloads:loader_fed"), hold=[event], cwd=HERE) as run:
        run.wait_for(pattern, int(nth or 1))
        run.kill()
    run_ok(_compare(out, "contract_workloads:loader_fed"), cwd=HERE)
    assert without_timing(_results(out)) == without_timing(uninterrupted)
    finals = uninterrupted["optimizers"]["adam"]["final"]["seeds"]
    assert len(finals) == 2 and all(len(f["val_loss_curve"]) == 3 for f in finals)


def test_steps_and_eval_every_index_the_final_curves_by_steps(tmp_path):
    out = tmp_path / "steps"
    assert main(_compare(out, "contract_workloads:bn_dropout", "--steps", "10", "--eval-every", "4")) == 0
    data = _results(out)
    assert data["config"]["steps"] == 10 and data["config"]["eval_every"] == 4
    for final in data["optimizers"]["adam"]["final"]["seeds"]:
        assert final["eval_steps"] == [0, 4, 8, 10] and len(final["val_loss_curve"]) == 4 and final["steps"] == 10
    assert main(["report", str(out)]) == 0  # the report reads a step-indexed results.json back
    # Another budget in the same folder trains final runs of its own
    assert main(_compare(out, "contract_workloads:bn_dropout", "--steps", "12", "--eval-every", "4")) == 0
    assert [f["eval_steps"] for f in _results(out)["optimizers"]["adam"]["final"]["seeds"]] == [[0, 4, 8, 12]] * 2


def test_bf16_on_cpu_end_to_end_records_the_device(tmp_path):
    out = tmp_path / "bf16"
    assert main(_compare(out, "contract_workloads:bn_dropout", "--device", "cpu", "--precision", "bf16")) == 0
    config = _results(out)["config"]
    assert config["precision"] == "bf16" and config["device"]["precision"] == "bf16"
    assert config["device"]["device"] == "cpu" and config["device"]["torch"] == torch.__version__


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is there")
@pytest.mark.parametrize("command", [["compare"], ["suite", "--workloads", "digits-softmax"]])
def test_a_cuda_device_that_is_not_there_is_one_line_and_exit_2(tmp_path, capsys, command):
    out = tmp_path / "cuda"
    assert main([*command, "--out", str(out), "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hessian-lr: error: device 'cuda' is not available: torch.cuda.is_available() is False on "
                   "this machine"]
    assert not out.exists()


def _device_of_this_process(task: int, progress) -> str | None:
    from hessian_lr.training.placement import process_device

    return process_device()


def test_each_worker_process_trains_on_a_device_of_its_own():
    from hessian_lr.pipeline.execution import executor, no_progress
    from hessian_lr.training.placement import process_device

    # "cpu:0" names the CPU too, but differently: the one way to tell two processes' devices apart here
    with executor(2, 1, 1, no_progress, ("cpu", "cpu:0")) as run:
        assert run(_device_of_this_process, [0, 1]) == ["cpu", "cpu:0"]
    assert process_device() is None


def test_devices_give_the_results_of_one_process(tmp_path):
    args = ["--optimizers", "adam,sgd", "--trials", "2", "--seeds", "2", "--epochs", "1", "--no-batch-startup", "--quiet"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["compare", "--out", str(one), "--workload", "digits-softmax", *args, "--workers", "1"]) == 0
    assert main(["compare", "--out", str(two), "--workload", "digits-softmax", *args, "--devices", "cpu,cpu"]) == 0
    first, second = _results(one), _results(two)
    assert {w["pid"] for w in second["workers"]} != {w["pid"] for w in first["workers"]}
    for data in (first, second):
        data.pop("workers")
        data["config"].pop("out")
        data["config"].pop("workers")
    assert without_timing(second) == without_timing(first)
