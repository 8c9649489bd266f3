"""Optuna on a real PostgreSQL server: several worker processes share one study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from postgres import PostgresUnavailable, temporary_cluster


@pytest.fixture(scope="module")
def postgres_url():
    try:
        with temporary_cluster() as url:
            yield url
    except PostgresUnavailable as exc:
        print(f"\nSKIP PostgreSQL tests: {exc}", file=sys.stderr)
        pytest.skip(f"PostgreSQL unavailable: {exc}")


def cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hessian_lr.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def wait_for_studies(url: str, prefix: str, count: int, timeout: float = 60) -> list[str]:
    storage = optuna.storages.RDBStorage(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith(prefix)]
        if len(names) >= count:
            return names
        time.sleep(0.2)
    raise AssertionError(f"no study {prefix}* appeared")


def counted(trials):
    return [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE or t.user_attrs.get("diverged")]


def test_three_workers_share_one_study_with_exactly_n_trials(postgres_url, tmp_path):
    trials = 12
    out = tmp_path / "run"
    leader = cli("compare", "--storage", postgres_url, "--study", "pgthree", "--optimizers", "adam", "--trials",
                 str(trials), "--epochs", "2", "--workers", "1", "--out", str(out), "--quiet")
    try:
        [name] = wait_for_studies(postgres_url, "pgthree.", 1)
        workers = [cli("worker", "--storage", postgres_url, "--study", "pgthree") for _ in range(2)]
        for proc in [leader, *workers]:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
    finally:
        leader.kill()
    study = optuna.load_study(study_name=name, storage=postgres_url)
    done = counted(study.trials)
    assert len(done) == trials
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)
    results = json.loads((out / "results.json").read_text())
    assert sorted(t["number"] for t in results["optimizers"]["adam"]["trials"]) == sorted(t.number for t in done)


def test_a_killed_worker_is_detected_by_heartbeat_and_its_trial_retried(postgres_url, tmp_path):
    trials = 4
    env = {"HESSIAN_LR_HEARTBEAT_S": "1", "HESSIAN_LR_GRACE_S": "3"}
    out = tmp_path / "run"
    leader = cli("compare", "--storage", postgres_url, "--study", "pgkill", "--optimizers", "adam", "--trials",
                 str(trials), "--epochs", "60", "--workers", "1", "--out", str(out), "--quiet", env=env)
    victim = None
    try:
        [name] = wait_for_studies(postgres_url, "pgkill.", 1)
        victim = cli("worker", "--storage", postgres_url, "--study", "pgkill", env=env)
        storage = optuna.storages.RDBStorage(postgres_url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the victim runs a trial of its own
            study = optuna.load_study(study_name=name, storage=storage)
            if sum(t.state == optuna.trial.TrialState.RUNNING for t in study.trials) >= 2:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        _, err = leader.communicate(timeout=300)
        assert leader.returncode == 0, err
    finally:
        leader.kill()
        if victim:
            victim.kill()
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert len(counted(study.trials)) == trials
    stale = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get("diverged")
             and not t.user_attrs.get("surplus")]
    assert stale, "the killed worker's trial should have been failed by the heartbeat check"
    retried = {t.system_attrs.get("failed_trial") for t in study.trials}
    assert all(t.number in retried for t in stale), "every stale trial is re-queued as a new trial"
