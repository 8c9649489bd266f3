"""The README's own-workload example, exactly as written there (a CNN with BatchNorm and dropout
fed by DataLoaders, options from a [workload] table), through the console script: training in
train mode, every evaluation in eval mode under no_grad, and a run killed in its finals and run
again gives the uninterrupted results.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from announced import Announced, run_ok
from results_helpers import without_timing

README = Path(__file__).resolve().parents[2] / "README.md"
ARGS = ["--config", "cnn.toml", "--trials", "2", "--seeds", "2", "--epochs", "2", "--workers", "1", "--quiet"]

# Wraps the README's model to note, on every forward, its mode and whether autograd records.
PROBE = '''
import dataclasses

import torch

import my_cnn


class Probe(my_cnn.SmallCNN):
    def forward(self, x):
        with open("modes.txt", "a") as fh:
            fh.write(f"{int(self.training)}{int(torch.is_grad_enabled())}\\n")
        return super().forward(x)


def probed(channels=8, dropout=0.2, **options):
    workload = my_cnn.digits_cnn(channels=channels, dropout=dropout, **options)
    return dataclasses.replace(workload, build_model=lambda: Probe(channels, dropout))
'''


def readme_block(language: str, first_line: str) -> str:
    """The README's fenced ``language`` block that starts with ``first_line``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)
    [block] = [b for b in blocks if b.startswith(first_line + "\n")]
    return block


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The example's files as the README gives them, and the probe, in a folder of their own."""
    folder = tmp_path_factory.mktemp("readme-workload")
    (folder / "my_cnn.py").write_text(readme_block("python", "# my_cnn.py"))
    toml = readme_block("toml", "# cnn.toml").replace('name = "my_cnn:digits_cnn"', 'name = "probe:probed"')
    (folder / "cnn.toml").write_text(toml)
    (folder / "probe.py").write_text(PROBE)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(folder) -> dict:
    run_ok(["compare", *ARGS, "--out", "whole"], cwd=folder)
    return json.loads((folder / "whole" / "results.json").read_text())


def test_the_example_trains_in_train_mode_and_evaluates_in_eval_mode(folder, uninterrupted):
    modes = (folder / "modes.txt").read_text().split()
    assert set(modes) == {"11", "00"}  # train mode with autograd, eval mode under no_grad: nothing else
    assert uninterrupted["config"]["workload_options"] == {"channels": 16, "dropout": 0.1}
    assert uninterrupted["workload_source"]["source"] == "probe:probed"
    for arm in ("adam", "hessian-adam"):
        finals = uninterrupted["optimizers"][arm]["final"]["seeds"]
        assert len(finals) == 2 and all(len(f["val_loss_curve"]) == 3 for f in finals)
        assert finals[0]["val_loss_curve"] != finals[1]["val_loss_curve"]  # the seeds differ


def test_the_example_killed_in_its_finals_and_run_again_gives_the_uninterrupted_result(folder, uninterrupted):
    with Announced(["compare", *ARGS, "--out", "killed"], hold=["final-saved *#2"], cwd=folder) as run:
        run.wait_for("final-saved *", 2)
        run.kill()
    run_ok(["compare", *ARGS, "--out", "killed"], cwd=folder)
    again = json.loads((folder / "killed" / "results.json").read_text())
    assert without_timing(again) == without_timing(uninterrupted)
