"""Several processes on one study: two compare runs with different run folders on one --storage
journal, a pool of workers, a run that died while others go on. A RUNNING trial is only ever
trained by its owner (or, once its owner is dead, by exactly one process that takes it over),
and no two trials are drawn from the same sampler seed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import optuna
from announced import Announced, run_ok

from hessian_lr.tuning import optuna_api as api
from hessian_lr.tuning import study as study_module
from hessian_lr.tuning.space import Float, SearchSpace
from hessian_lr.tuning.storage import journal_storage
from hessian_lr.tuning.study import OWNER_ATTR, _claim_orphans, open_study, owner_identity, run_study

TRIALS = 6
ARGS = ["--optimizers", "adam", "--trials", str(TRIALS), "--epochs", "2", "--seeds", "1", "--no-ablation",
        "--workers", "1", "--no-batch-startup", "--quiet"]


def trials_of(journal) -> list[optuna.trial.FrozenTrial]:
    storage = journal_storage(journal)
    [summary] = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).trials


def compare(out, journal, *extra) -> list[str]:
    return ["compare", "--out", str(out), "--storage", str(journal), *ARGS, *extra]


def assert_budget_trained_once(journal) -> list[optuna.trial.FrozenTrial]:
    trials = trials_of(journal)
    assert [t.number for t in trials] == list(range(TRIALS))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    lrs = [t.params["lr"] for t in trials]
    assert len(set(lrs)) == TRIALS, lrs  # no start-up point drawn twice
    return trials


def test_two_runs_with_different_folders_share_a_journal_without_touching_each_others_trials(tmp_path):
    """Run A holds its second trial (RUNNING); run B, another folder on the same journal, trains
    the rest of the budget around it — never A's trial, never A's lr again — and waits for A's
    trial; released, both finish with the same six trials."""
    journal = tmp_path / "shared.journal"
    with Announced(compare(tmp_path / "a", journal), hold=["batch-started *#2"]) as a:
        a.wait_for("batch-started *", 2)
        with Announced(compare(tmp_path / "b", journal)) as b:
            told = b.wait_for("trial-told *", TRIALS - 2)
            assert all(line.split()[2] not in ("0", "1") for line in told)  # A's trials are A's
            a.release()
            assert b.finish() == 0, b.stderr()
            assert b.stderr() == ""
        assert a.finish() == 0, a.stderr()
    trials = assert_budget_trained_once(journal)
    owners = [t.user_attrs[OWNER_ATTR]["run"] for t in trials]
    assert owners[:2] == [str((tmp_path / "a").resolve())] * 2
    results = [json.loads((tmp_path / run / "results.json").read_text())["optimizers"]["adam"] for run in "ab"]
    assert results[0]["trials"] == results[1]["trials"] and results[0]["best_lr"] == results[1]["best_lr"]


def test_a_dead_runs_trial_is_taken_over_by_the_other_run(tmp_path):
    """A is killed while its second trial trains: B takes that trial over (A's process is dead)
    and trains it under its own number; A's rerun then finds the budget met."""
    journal = tmp_path / "shared.journal"
    with Announced(compare(tmp_path / "a", journal), hold=["batch-started *#2"]) as a:
        a.wait_for("batch-started *", 2)
        a.kill()
    run_ok(compare(tmp_path / "b", journal))
    trials = assert_budget_trained_once(journal)
    assert trials[1].user_attrs[OWNER_ATTR]["run"] == str((tmp_path / "b").resolve())
    run_ok(compare(tmp_path / "a", journal))
    assert trials_of(journal) == trials


def test_workers_on_one_study_never_train_the_same_start_up_lr_twice(tmp_path):
    """Four processes on one study (--workers 4 --trials 6 trained lr 0.00443 twice when the
    sampler's seed counted only finished trials)."""
    journal = tmp_path / "run" / "optuna.journal"
    run_ok(["compare", "--out", str(tmp_path / "run"), "--optimizers", "adam", "--trials", str(TRIALS), "--epochs", "2",
            "--seeds", "1", "--no-ablation", "--workers", "4", "--quiet"])
    assert_budget_trained_once(journal)


DEAD_PID = """
import subprocess, sys
proc = subprocess.Popen([sys.executable, "-c", "pass"]); proc.wait(); print(proc.pid)
"""


def test_an_orphan_is_claimed_by_exactly_one_of_many_claimers(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", DEAD_PID], capture_output=True, text=True).stdout)
    path = tmp_path / "optuna.journal"
    study = open_study(journal_storage(path), "s", "f")
    orphan_owner = {**owner_identity(), "pid": dead}
    api.create_trial(study, {OWNER_ATTR: orphan_owner})
    claimed: list[int] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        mine = open_study(journal_storage(path), "s", "f")
        me = owner_identity()
        study_module._live_tokens.add(me["token"])  # as run_study does for its owner
        barrier.wait()
        claimed.extend(t.number for t in _claim_orphans(mine, me, 5))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert claimed == [0]
    assert study.trials[0].user_attrs[OWNER_ATTR]["token"] in study_module._live_tokens


def test_a_live_owners_running_trial_is_left_alone(tmp_path):
    """run_study in this process never evaluates a RUNNING trial whose owner is alive (another
    thread's run here): it counts it, trains the rest of the budget and waits for it."""
    space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True)})
    study = open_study(journal_storage(tmp_path / "optuna.journal"), "s", "f")
    holder = owner_identity()
    study_module._live_tokens.add(holder["token"])  # a live run_study of this process owns it
    api.create_trial(study, {OWNER_ATTR: holder})
    seen = []

    def objective(points):
        seen.extend(points)
        if len(seen) == 2:  # the rest of the budget is done: the owner finishes its trial
            study.tell(0, 0.5)
        return [(p["lr"], {}) for p in points]

    try:
        run_study(study, objective, n_trials=3, space=space, seed=1)
    finally:
        study_module._live_tokens.discard(holder["token"])
    assert len(seen) == 2  # trial 0 was never handed to this objective
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
