"""run_study's resume guarantees at the storage level, and the journal's kill-safe lock."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest

from hessian_lr.tuning.space import Categorical, Fixed, Float, Int, SearchSpace
from hessian_lr.tuning import optuna_api as api
from hessian_lr.tuning.study import open_study, run_study, storage_for

LR_PARAM = "lr"
LR_SPACE = SearchSpace({"lr": Float(1e-4, 1e-1, log=True)})
WIDE = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "betas[1]": Float(0.9, 0.9999), "steps": Int(1, 8),
                    "amsgrad": Categorical((False, True)), "eps": Fixed(1e-8)})


def _objective(points):
    return [((p["lr"] - 3e-3) ** 2 + 1e-3 * p.get("steps", 0), {}) for p in points]  # deterministic in the point


def _run(study, n_trials, batch_size=1, batch_startup=False, space=LR_SPACE):
    run_study(study, _objective, n_trials=n_trials, space=space, seed=7, batch_size=batch_size,
              batch_startup=batch_startup)


def _study(folder, name="s"):
    return open_study(storage_for(None, folder), name, "fingerprint")  # folder/optuna.journal


def test_a_trial_killed_inside_ask_gets_the_lr_ask_was_drawing(tmp_path):
    """A kill between ask's new trial and its lr leaves a RUNNING trial without parameters; the
    resumed run draws that lr as ask would have, and ends where an uninterrupted run ends."""
    reference = _study(tmp_path / "reference")
    _run(reference, 14)

    study = _study(tmp_path / "killed")
    _run(study, 11)  # the 10 random start-up trials and one TPE trial
    api.storage_of(study).create_new_trial(api.study_id(study))  # what the kill leaves: RUNNING, no lr
    assert LR_PARAM not in study.trials[-1].params
    _run(study, 14)

    def numbers_lrs_values(s):
        return [(t.number, t.params[LR_PARAM], t.value, t.state) for t in s.trials]

    assert numbers_lrs_values(study) == numbers_lrs_values(reference)


def test_a_wider_space_samples_every_dimension_and_resumes_exactly_after_a_kill_inside_ask(tmp_path):
    """The objective sees every dimension (fixed ones included). A kill between two of a trial's
    parameters leaves a RUNNING trial with only some of them: it is closed as an uncounted FAIL
    and the next ask draws the same point, so the counted trials are an uninterrupted run's."""
    seen = []

    def objective(points):
        seen.extend(points)
        return _objective(points)

    reference = _study(tmp_path / "reference")
    run_study(reference, objective, n_trials=13, space=WIDE, seed=7)
    assert all(set(p) == {"lr", "betas[1]", "steps", "amsgrad", "eps"} and p["eps"] == 1e-8 for p in seen)
    assert all(0.9 <= p["betas[1]"] <= 0.9999 and p["steps"] in range(1, 9) for p in seen)

    study = _study(tmp_path / "killed")
    run_study(study, _objective, n_trials=11, space=WIDE, seed=7)
    trial_id = api.storage_of(study).create_new_trial(api.study_id(study))  # killed after storing one parameter
    api.storage_of(study).set_trial_param(trial_id, "lr", 0.01, WIDE.distributions()["lr"])
    run_study(study, _objective, n_trials=13, space=WIDE, seed=7)

    def counted(s):
        return [(t.params, t.value) for t in s.trials if t.state == optuna.trial.TrialState.COMPLETE]

    assert counted(study) == counted(reference)
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.FAIL) == 1


def test_a_space_of_fixed_values_trains_the_same_point_every_trial(tmp_path):
    study = _study(tmp_path)
    run_study(study, _objective, n_trials=3, space=SearchSpace({"lr": Fixed(2e-3)}), seed=7)
    assert [t.params for t in study.trials] == [{}] * 3 and len({t.value for t in study.trials}) == 1


def test_a_batch_killed_inside_its_asks_resumes_to_exactly_the_budget(tmp_path):
    """Batched: the trials of the interrupted batch are trained, the rest of the batch is asked
    afresh (with those already told, so its lrs may differ from an uninterrupted run's); the
    budget is met exactly and every trial has its lr."""
    study = _study(tmp_path)
    _run(study, 9, batch_size=3)
    study.sampler = optuna.samplers.RandomSampler(seed=0)
    study.ask({LR_PARAM: optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    api.storage_of(study).create_new_trial(api.study_id(study))  # killed while asking the batch 9..11
    _run(study, 12, batch_size=3)
    assert [t.number for t in study.trials] == list(range(12))
    assert all(t.state == optuna.trial.TrialState.COMPLETE and LR_PARAM in t.params for t in study.trials)


def test_the_journal_lock_dies_with_its_process(tmp_path):
    """SIGKILL a process while it holds the journal's write lock: the lock is free at once (no
    stale lock file for the next run to wait out)."""
    journal = tmp_path / "optuna.journal"
    _study(tmp_path)  # the journal exists
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from hessian_lr.tuning.study import KernelJournalLock; "
        f"lock = KernelJournalLock({str(journal)!r}); lock.acquire(); print('held', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        fd = os.open(f"{journal}.flock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # really held by the other process
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free the moment the holder died
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        holder.kill()
        holder.wait()
    start = time.monotonic()
    study = _study(tmp_path)
    _run(study, 2)
    assert len(study.trials) == 2 and time.monotonic() - start < 20  # not Optuna's 30 s grace period


def test_threads_of_one_process_exclude_each_other(tmp_path):
    from hessian_lr.tuning.study import KernelJournalLock

    lock_a, lock_b = KernelJournalLock(str(tmp_path / "j")), KernelJournalLock(str(tmp_path / "j"))
    lock_a.acquire()
    got = threading.Event()
    thread = threading.Thread(target=lambda: (lock_b.acquire(), got.set(), lock_b.release()))
    thread.start()
    assert not got.wait(0.3)  # blocked while lock_a holds it
    lock_a.release()
    assert got.wait(10)
    thread.join()
    with pytest.raises(RuntimeError):
        lock_a.release()  # not held any more
