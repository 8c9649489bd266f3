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
    """The studies whose names start with ``prefix``: tuning studies, unless it names a finals study."""
    return [s.study_name for s in optuna.get_all_study_summaries(url) if s.study_name.startswith(prefix)
            and (".finals." in prefix or ".finals." not in s.study_name)]


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
    retried = {number for t in study.trials for number in t.system_attrs.get("retry_history", [])}
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
    [name] = study_names(postgres_url, "pgrestart.")
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


# -- workers follow a suite: trials and final runs of every workload ------------------------------------

# Each process holds at the first trial and the first final-run job it takes in each workload, until
# the other has taken one too: whoever comes first waits there, so the other must take the next one.
PHASES = ["batch-started *.noisy-quadratic.*", "job-claimed *.noisy-quadratic.*",
          "batch-started *.digits-softmax.*", "job-claimed *.digits-softmax.*"]


def suite_args(url: str, study: str, out) -> list[str]:
    return ["suite", "--workloads", "noisy-quadratic,digits-softmax", "--optimizers", "adam", "--trials", "3",
            "--seeds", "2", "--no-fidelity", "--no-batch-startup", "--workers", "1", "--storage", url, "--study", study,
            "--out", str(out), "--quiet"]


def finals_jobs(url: str, study: str, workload: str) -> list[optuna.trial.FrozenTrial]:
    [name] = study_names(url, f"{study}.{workload}.finals.")
    return optuna.load_study(study_name=name, storage=url).trials


def test_a_worker_serves_every_workload_of_a_suite_its_trials_and_final_runs(postgres_url, tmp_path):
    """A worker started once follows a two-workload suite: both processes train trials of both
    workloads and final runs of both; the worker exits when the suite is done; results.json says
    who ran what; the finals are what one machine trains at the same best settings."""
    from results_helpers import without_timing

    from hessian_lr.config import CompareConfig
    from hessian_lr.pipeline.compare import FinalsTask, train_finals
    from hessian_lr.pipeline.store import FinalRun, RunStore

    out = tmp_path / "suite"
    holds = [f"{phase}#1" for phase in PHASES]
    with Announced(suite_args(postgres_url, "pgsuite", out), hold=holds) as suite:
        suite.wait_for(PHASES[0])  # the plan and every study exist
        with Announced(["worker", "--storage", postgres_url, "--study", "pgsuite"], hold=holds) as worker:
            for phase in PHASES:
                suite.wait_for(phase)
                worker.wait_for(phase)
                suite.release()
                worker.release()
            assert suite.finish() == 0, suite.stderr()
            assert worker.finish() == 0, worker.stderr()  # exits on its own: the suite is done
            assert worker.stderr() == ""
        pids = {"suite": suite.proc.pid, "worker": worker.proc.pid}
    suite_json = json.loads((out / "suite.json").read_text())
    for workload in ("noisy-quadratic", "digits-softmax"):
        results = suite_json["workloads"][workload]
        ran = {entry["pid"]: entry for entry in results["workers"]}
        assert set(ran) == set(pids.values()), results["workers"]
        assert ran[pids["worker"]]["run"] is None and ran[pids["suite"]]["run"] == str((out / workload).resolve())
        assert sum(entry["trials"]["adam"] for entry in ran.values()) == 3
        assert all(entry["trials"]["adam"] >= 1 and entry["final_runs"]["adam"] == 1 for entry in ran.values())
        jobs = finals_jobs(postgres_url, "pgsuite", workload)
        assert sorted(t.user_attrs["owner"]["pid"] for t in jobs) == sorted(pids.values())
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in jobs)
        # One machine, the same best setting: the same final runs, number for number.
        arm = results["optimizers"]["adam"]
        config = CompareConfig(workload=workload, optimizers=("adam",), trials=3, seeds=2, ablation=False,
                               batch_startup=False, workers=1, out=tmp_path / "alone" / workload)
        runs = tuple(FinalRun.of("adam", arm["best_params"], seed, config.epochs, workload) for seed in (0, 1))
        train_finals(FinalsTask(config, "adam", runs))
        alone = [RunStore(config.out).load(run) for run in runs]
        assert without_timing(alone) == without_timing(arm["final"]["seeds"])


def test_a_worker_killed_while_it_trains_a_final_run_loses_nothing(postgres_url, tmp_path):
    """A worker SIGKILLed while it trains one of the finals: its heartbeat stops, the compare
    fails that job after the grace period and trains its retry; every final run is trained once
    to completion and results.json credits the compare with both."""
    out = tmp_path / "run"
    args = ["compare", "--storage", postgres_url, "--study", "pgfinalkill", "--optimizers", "adam", "--trials", "2",
            "--epochs", "2", "--seeds", "2", "--no-ablation", "--no-batch-startup", "--workers", "1", "--out", str(out),
            "--quiet"]
    with Announced(args, env=FAST, hold=["job-claimed *#1"]) as leader:
        leader.wait_for("batch-started *")
        with Announced(["worker", "--storage", postgres_url, "--study", "pgfinalkill"], env=FAST,
                       hold=["job-claimed *#1"]) as victim:
            leader.wait_for("job-claimed *")
            victim.wait_for("job-claimed *")  # the other job: the leader holds the first
            victim.kill()
        leader.release()
        assert leader.finish() == 0, leader.stderr()
        leader_pid = leader.proc.pid
    jobs = finals_jobs(postgres_url, "pgfinalkill", "mnist1d-mlp")
    states = sorted(t.state.name for t in jobs)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"], states
    assert {t.user_attrs["owner"]["pid"] for t in jobs if t.state.name == "COMPLETE"} == {leader_pid}
    results = json.loads((out / "results.json").read_text())
    assert len(results["optimizers"]["adam"]["final"]["seeds"]) == 2
    [entry] = [e for e in results["workers"] if e["final_runs"]]
    assert entry["pid"] == leader_pid and entry["final_runs"] == {"adam": 2}
