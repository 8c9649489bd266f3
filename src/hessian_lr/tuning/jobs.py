"""Jobs in a shared Optuna storage: work any process may take, done exactly once, its result kept
in the storage (the final runs of a compare on a database storage, :mod:`hessian_lr.pipeline.compare`).

A job is a trial of a *jobs study*, queued as WAITING with its key and payload as user
attributes (:func:`enqueue_jobs`). A process takes one by the storage's WAITING -> RUNNING state
change, which exactly one process wins (:func:`claim_job`), and owns it as a tuning trial is owned
(:mod:`hessian_lr.tuning.study`): the user attribute ``owner`` names its host and process, and on a
database storage it sends heartbeats while it works (:func:`~hessian_lr.tuning.study.heartbeats`).
A job whose process died is failed by whoever next calls :func:`fail_stale` after the grace period
and queued again by Optuna's retry callback; one whose retries ran out is queued again by the
process that waits for it (:func:`work_until_done`). A finished job is a COMPLETE trial whose user
attribute ``result`` holds what the job returned (:func:`complete_job`, :func:`job_results`); its
value (0.0) means nothing.

Only the process that needs a set of jobs queues them (and queues them again): two processes
never queue the same key at once, so no key is queued twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hessian_lr import events
from hessian_lr.tuning import optuna_api as api
from hessian_lr.tuning.study import OWNER_ATTR, POLL_S, heartbeats

__all__ = ["Job", "enqueue_jobs", "claim_job", "complete_job", "finished_jobs", "job_results", "job_owners", "fail_stale",
           "work_until_done", "work_while_waiting", "KEY_ATTR", "PAYLOAD_ATTR", "RESULT_ATTR"]

KEY_ATTR = "job"
PAYLOAD_ATTR = "payload"
RESULT_ATTR = "result"
_PRESENT = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)

# run(job) -> the job's result (JSON-serialisable)
JobRunner = Callable[["Job"], Any]


@dataclass(frozen=True)
class Job:
    """A claimed job: its trial (id and number), key and payload."""

    trial_id: int
    number: int
    key: str
    payload: Any


def _keys(trials: list[FrozenTrial]) -> set[str]:
    return {t.user_attrs.get(KEY_ATTR) for t in trials if t.state in _PRESENT}


def enqueue_jobs(study: optuna.Study, jobs: Mapping[str, Any]) -> list[str]:
    """Queue every job ``key -> payload`` that has no queued, running or finished trial (so a
    rerun, or a wait for a job whose retries ran out, queues only what is missing). Returns the
    keys queued."""
    present = _keys(study.get_trials(deepcopy=False))
    queued = []
    for key, payload in jobs.items():
        if key not in present:
            study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING,
                                                      user_attrs={KEY_ATTR: key, PAYLOAD_ATTR: payload}))
            queued.append(key)
    return queued


def claim_job(study: optuna.Study, owner: Mapping[str, Any]) -> Job | None:
    """Take a queued job (None if there is none) and mark it ``owner``'s; its first heartbeat is
    recorded at once, so a kill from this moment on is detected."""
    trial_id = api.pop_waiting_trial(study)
    if trial_id is None:
        return None
    storage = api.storage_of(study)
    if api.heartbeat_enabled(storage):
        api.record_heartbeat(storage, trial_id)
    storage.set_trial_user_attr(trial_id, OWNER_ATTR, dict(owner))
    trial = storage.get_trial(trial_id)
    return Job(trial_id, trial.number, trial.user_attrs[KEY_ATTR], trial.user_attrs[PAYLOAD_ATTR])


def complete_job(study: optuna.Study, job: Job, result: Any) -> bool:
    """Store ``result`` and finish the job; False if it was failed meanwhile as stale (its retry
    is then done by whoever takes it)."""
    storage = api.storage_of(study)
    try:
        storage.set_trial_user_attr(job.trial_id, RESULT_ATTR, result)
        study.tell(job.number, 0.0)
    except Exception as exc:  # noqa: BLE001
        if not api.is_update_finished(exc):
            raise
        return False
    return True


def finished_jobs(study: optuna.Study) -> list[FrozenTrial]:
    """The finished jobs' trials (user attributes: key, payload, result, owner)."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def job_results(study: optuna.Study) -> dict[str, Any]:
    """``key -> result`` of every finished job (the first, should a key have finished twice)."""
    results: dict[str, Any] = {}
    for trial in finished_jobs(study):
        results.setdefault(trial.user_attrs[KEY_ATTR], trial.user_attrs.get(RESULT_ATTR))
    return results


def job_owners(study: optuna.Study) -> list[tuple[dict[str, Any], Any]]:
    """``(owner, payload)`` of every finished job: who did what."""
    return [(t.user_attrs.get(OWNER_ATTR) or {}, t.user_attrs.get(PAYLOAD_ATTR)) for t in finished_jobs(study)]


def fail_stale(study: optuna.Study) -> None:
    """Fail the jobs whose process stopped sending heartbeats (and queue their retries)."""
    if api.heartbeat_enabled(api.storage_of(study)):
        api.fail_stale_trials(study)


def _do(study: optuna.Study, job: Job, run: JobRunner) -> None:
    with heartbeats(study, [job.trial_id]):
        events.announce("job-claimed", study.study_name, job.number)
        result = run(job)
    if complete_job(study, job, result):
        events.announce("job-done", study.study_name, job.number)


def work_while_waiting(study: optuna.Study, run: JobRunner, owner: Mapping[str, Any]) -> int:
    """Do queued jobs until none is left; returns how many this process did."""
    done = 0
    fail_stale(study)
    while (job := claim_job(study, owner)) is not None:
        _do(study, job, run)
        done += 1
    return done


def work_until_done(study: optuna.Study, jobs: Mapping[str, Any], run: JobRunner, owner: Mapping[str, Any]) -> None:
    """Queue ``jobs`` (those missing), then do queued jobs — these or any other of the study — until
    every one of ``jobs`` has finished, here or in other processes."""
    enqueue_jobs(study, jobs)
    while True:
        work_while_waiting(study, run, owner)
        if set(jobs) <= set(job_results(study)):
            return
        enqueue_jobs(study, jobs)  # a job whose retries ran out (or that a kill left unqueued)
        time.sleep(POLL_S)
