"""Optuna on a real PostgreSQL server: several worker processes share one study."""

from __future__ import annotations

import json
import sys

import optuna
import pytest

from announced import Announced
from postgres import PostgresUnavailable, cluster


@pytest.fixture(scope="module")
def server():
    try:
        with cluster() as running:
            yield running
    except PostgresUnavailable as exc:
        print(f"\nSKIP PostgreSQL tests: {exc}", file=sys.stderr)
        pytest.skip(f"PostgreSQL unavailable: {exc}")


@pytest.fixture
def postgres_url(server):
    if not server.running:  # a test stopped it
        server.start()
    return server.url


def study_names(url: str, prefix: str) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(url) if s.study_name.startswith(prefix)]


def counted(trials):
    return [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE or t.user_attrs.get("diverged")]


def test_three_workers_share_one_study_with_exactly_n_trials(postgres_url, tmp_path):
    trials = 12
    out = tmp_path / "run"
    args = ["compare", "--storage", postgres_url, "--study", "pgthree", "--optimizers", "adam", "--trials", str(trials),
            "--epochs", "2", "--workers", "1", "--out", str(out), "--quiet"]
    with Announced(args) as leader:
        leader.wait_for("trial-asking *")  # the study exists
        workers = [Announced(["worker", "--storage", postgres_url, "--study", "pgthree"]) for _ in range(2)]
        try:
            for run in [leader, *workers]:
                assert run.finish() == 0, run.stderr()
        finally:
            for worker in workers:
                worker.__exit__()
    [name] = study_names(postgres_url, "pgthree.")
    study = optuna.load_study(study_name=name, storage=postgres_url)
    done = counted(study.trials)
    assert len(done) == trials
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)
    assert len({t.params["lr"] for t in done}) == trials  # no point drawn twice by two processes
    results = json.loads((out / "results.json").read_text())
    assert sorted(t["number"] for t in results["optimizers"]["adam"]["trials"]) == list(range(trials))


def test_a_killed_worker_is_detected_by_heartbeat_and_its_trial_retried(postgres_url, tmp_path):
    """SIGKILL a worker while it trains (held right after handing its trial to training): its
    heartbeat stops, the leader fails the trial after the grace period and trains its retry."""
    trials = 4
    env = {"HESSIAN_LR_HEARTBEAT_S": "1", "HESSIAN_LR_GRACE_S": "3"}
    out = tmp_path / "run"
    args = ["compare", "--storage", postgres_url, "--study", "pgkill", "--optimizers", "adam", "--trials", str(trials),
            "--epochs", "20", "--workers", "1", "--out", str(out), "--quiet"]
    with Announced(args, env=env, hold=["batch-started *#1"]) as leader:
        leader.wait_for("batch-started *")
        with Announced(["worker", "--storage", postgres_url, "--study", "pgkill"], env=env,
                       hold=["batch-started *#1"]) as victim:
            victim.wait_for("batch-started *")
            victim.kill()
        leader.release()
        assert leader.finish() == 0, leader.stderr()
    [name] = study_names(postgres_url, "pgkill.")
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert len(counted(study.trials)) == trials
    stale = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get("diverged")
             and not t.user_attrs.get("surplus")]
    assert stale, "the killed worker's trial should have been failed by the heartbeat check"
    retried = {t.system_attrs.get("failed_trial") for t in study.trials}
    assert all(t.number in retried for t in stale), "every stale trial is re-queued as a new trial"


FAST = {"HESSIAN_LR_HEARTBEAT_S": "1", "HESSIAN_LR_GRACE_S": "3"}


def leader_args(url: str, study: str, out, trials: int = 4) -> list[str]:
    return ["compare", "--storage", url, "--study", study, "--optimizers", "adam", "--trials", str(trials), "--epochs",
            "2", "--seeds", "1", "--no-ablation", "--workers", "1", "--out", str(out), "--quiet"]


def test_a_database_restart_mid_run_is_survived_by_compare_and_workers(server, postgres_url, tmp_path):
    """The server goes down while compare holds a trial and a worker trains one; both retry
    (announced), the server comes back, both finish: the budget is met exactly, nothing is
    lost, no error is printed (it used to be Optuna's "invalid data ... exceeding max length")."""
    trials = 6
    with Announced(leader_args(postgres_url, "pgrestart", tmp_path / "run", trials), hold=["batch-started *#2"],
                   env=FAST) as leader:
        leader.wait_for("batch-started *", 2)
        with Announced(["worker", "--storage", postgres_url, "--study", "pgrestart"], env=FAST,
                       hold=["batch-started *#1"]) as worker:
            worker.wait_for("batch-started *")
            server.stop()
            leader.release()
            worker.release()
            leader.wait_for("storage-retry *")
            server.start()
            assert worker.finish() == 0, worker.stderr()
            assert worker.stderr() == ""
        assert leader.finish() == 0, leader.stderr()
        assert leader.stderr() == ""
    [name] = [s.study_name for s in optuna.get_all_study_summaries(postgres_url) if s.study_name.startswith("pgrestart.")]
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert len(counted(study.trials)) == trials
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)


def test_a_database_gone_for_good_is_one_line_naming_it_and_the_rerun_resumes(server, postgres_url, tmp_path):
    out = tmp_path / "run"
    with Announced(leader_args(postgres_url, "pggone", out), hold=["batch-started *#2"],
                   env={**FAST, "HESSIAN_LR_DB_RETRY_S": "1"}) as leader:
        leader.wait_for("batch-started *", 2)
        server.stop()
        leader.release()
        code, err = leader.finish(), leader.stderr()
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith(f"hessian-lr: error: lost the connection to the storage {postgres_url}")
    assert err.strip().endswith("run the same command again to resume")
    server.start()
    with Announced(leader_args(postgres_url, "pggone", out), env=FAST) as rerun:
        assert rerun.finish() == 0, rerun.stderr()
    assert len(json.loads((out / "results.json").read_text())["optimizers"]["adam"]["trials"]) == 4
