"""Kill-safe resume for real: SIGKILL a compare run, run the same command again, and get exactly
what an uninterrupted run gives (sequential seeded mode, and batched arms in lanes), with no
finished work redone."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from results_helpers import without_timing

TRIALS, SEEDS = 4, 3
ARGS = ["--optimizers", "adam", "--trials", str(TRIALS), "--epochs", "12", "--seeds", str(SEEDS), "--workers", "1",
        "--no-batch-startup", "--quiet"]  # the plain sequential, bit-reproducible mode


def compare(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hessian_lr.cli", "compare", "--out", str(out), *ARGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def study_trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    journal = out / "optuna.journal"
    if not journal.exists():
        return []
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    summaries = optuna.get_all_study_summaries(storage)
    if not summaries:
        return []
    return optuna.load_study(study_name=summaries[0].study_name, storage=storage).trials


def kill_when(proc: subprocess.Popen, condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError("the run finished before the kill point")
        time.sleep(0.02)
    raise AssertionError("kill point never reached")


def comparable(out: Path) -> dict:
    return without_timing(json.loads((out / "results.json").read_text()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference")
    finish(compare(out))
    return comparable(out)


def completed(trials):
    return {t.number: t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE}


@pytest.mark.parametrize("kill_point", ["trial-boundary", "mid-trial"])
def test_killed_during_tuning_resumes_to_the_uninterrupted_result(reference, tmp_path, kill_point):
    out = tmp_path / "run"
    proc = compare(out)
    if kill_point == "trial-boundary":
        kill_when(proc, lambda: len(completed(study_trials(out))) >= 2)
    else:
        kill_when(proc, lambda: len(completed(study_trials(out))) >= 1 and any(
            t.state == optuna.trial.TrialState.RUNNING for t in study_trials(out)))
        time.sleep(0)  # killed while a trial trains
    before = completed(study_trials(out))
    assert 1 <= len(before) < TRIALS
    finish(compare(out))
    after = study_trials(out)
    assert {n: v for n, v in completed(after).items() if n in before} == before  # nothing lost or redone
    assert len(completed(after)) == TRIALS and [t.number for t in after] == list(range(TRIALS))
    assert comparable(out) == reference


def test_killed_during_the_finals_reuses_finished_runs(reference, tmp_path):
    out = tmp_path / "run"
    proc = compare(out)
    kill_when(proc, lambda: len(list((out / "runs").glob("*.json"))) >= 1, timeout=180)
    kept = {p: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert 1 <= len(kept) < SEEDS
    assert not list(out.glob("results.json"))  # never half-written: absent until the end
    finish(compare(out))
    assert all(p.read_bytes() == data for p, data in kept.items())
    assert len(list((out / "runs").glob("*.json"))) == SEEDS
    assert comparable(out) == reference


BATCHED_ARGS = ["--optimizers", "adam,hessian-adam", "--trials", str(TRIALS), "--epochs", "12", "--seeds", "2",
                "--batch-trials", "2", "--threads", "1", "--quiet"]  # one process, the arms in two lanes


def all_trials(out: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    journal = out / "optuna.journal"
    if not journal.exists():
        return {}
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).trials
            for s in optuna.get_all_study_summaries(storage)}


def test_batched_lanes_killed_mid_batch_resume_to_the_uninterrupted_result(tmp_path):
    """Both arms train at once in threads, each its batch of TRIALS (TPE's start-up trials);
    SIGKILL while both batches train, run the same command again: every study ends with exactly
    its budget and the same numbers as a run never interrupted (each batch is trained again as
    the same batch). A kill while a batch's trials are being asked or told retrains the unfinished
    ones as a smaller batch: the budget is kept, the numbers agree to float tolerance."""
    def run(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "hessian_lr.cli", "compare", "--out", str(out), *BATCHED_ARGS],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    reference = tmp_path / "reference"
    finish(run(reference))
    out = tmp_path / "run"
    proc = run(out)

    def both_batches_training() -> bool:
        studies = all_trials(out)
        return len(studies) == 2 and all(
            len(trials) == TRIALS and all(t.state == optuna.trial.TrialState.RUNNING and "lr" in t.params
                                          for t in trials) for trials in studies.values())

    kill_when(proc, both_batches_training)
    finish(run(out))
    after = all_trials(out)
    assert len(after) == 2
    for trials in after.values():
        assert [t.number for t in trials] == list(range(TRIALS))
        assert len(completed(trials)) == TRIALS
    assert comparable(out) == comparable(reference)


def test_ctrl_c_during_batched_lanes_stops_cleanly_and_resumes(tmp_path):
    """SIGINT while both lanes train: the other lane stops at its next epoch and is joined, the
    command exits 130 with its one-line message (no C++ abort from a thread left inside torch),
    and the same command then finishes the budget."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "hessian_lr.cli", "compare", "--out", str(out), *BATCHED_ARGS]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(t.state == optuna.trial.TrialState.RUNNING for trials in all_trials(out).values() for t in trials):
        assert proc.poll() is None and time.monotonic() < deadline, "training never started"
        time.sleep(0.02)
    time.sleep(0.2)  # inside the batches
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "hessian-lr: interrupted; run the same command again to resume"
    finish(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for trials in all_trials(out).values():
        assert len(completed(trials)) == TRIALS
