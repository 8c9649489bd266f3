"""Optuna studies that resume: the same command run again continues where it stopped.

A study tunes the dimensions of a :class:`~hessian_lr.tuning.space.SearchSpace`: each trial's
``params`` hold a point of it (fixed dimensions are not sampled; the objective adds them).

Determinism: a trial's parameters are drawn by a fresh ``TPESampler`` seeded from ``(seed, the
trial's position)``, its position being the number of trials before it that count or are still
running. TPE is otherwise a function of the trial history, so a study interrupted and resumed
proposes the same points as one run straight through (in sequential mode: one process per
study, one trial at a time); and processes sharing a study never draw the same start-up point
twice (each new trial counts the running ones before it).

Ownership: every trial records its owner (host, process, run folder) in the user attribute
``owner`` from its first storage write. A RUNNING trial is only ever re-evaluated once its owner
is known to be dead — a process of this host that no longer exists — and then by exactly one
process (the claim is made under a host-wide lock): a second run sharing the storage never
touches a trial that another live run is training.

Interrupted trials (journal storages):
- a trial left RUNNING by a killed process is re-evaluated with its own parameters and told
  under its own number; one killed inside ``ask`` (no parameters yet) gets them drawn as
  ``ask`` was drawing them; one with only some of them is closed as an uncounted FAIL and the
  next ``ask`` draws the same point again. Batches: a kill while a batch trains retrains the same
  batch; a kill while its trials are asked or told retrains the unfinished ones as a smaller
  batch (float tolerance, budget unchanged);
- database storages: each trial sends heartbeats from its creation; a trial whose worker died is
  failed after the grace period and queued again (Optuna's retry callback), whichever host it ran on.

Budget: exactly ``n_trials`` trials count (completed, or failed because training diverged).
A trial asked beyond the budget (its position is ``n_trials`` or more: processes asking at once)
is closed at once as FAIL marked ``surplus`` (never trained, never counted).

Optuna's private parts are used only through :mod:`hessian_lr.tuning.optuna_api`.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from hessian_lr import events
from hessian_lr.tuning import optuna_api as api
from hessian_lr.tuning.space import SearchSpace
from hessian_lr.tuning.storage import (GRACE_S, HEARTBEAT_S, KernelJournalLock, StorageError, StorageLost,  # noqa: F401
                                       check_storage, journal_storage, storage_for)

__all__ = ["storage_for", "journal_storage", "check_storage", "KernelJournalLock", "open_study", "run_study",
           "finished_trials", "trial_point", "owner_identity", "heartbeats", "StorageError", "StorageLost"]

DIVERGED_ATTR = "diverged"
SURPLUS_ATTR = "surplus"
OWNER_ATTR = "owner"
POLL_S = 1.0
STARTUP_TRIALS = 10  # TPE's random start-up trials (Optuna's default)
HOST = socket.gethostname()

api.quiet_optuna()

# objective(points) -> one (value or None, user attributes) per point of the space (the sampled
# dimensions and the fixed ones); None marks a diverged run.
BatchObjective = Callable[[Sequence[dict]], list[tuple[float | None, dict]]]

_live_tokens: set[str] = set()  # run_study calls of this process now running


def owner_identity(run: str | Path | None = None) -> dict[str, Any]:
    """Who owns the trials a :func:`run_study` call creates: this host and process, a token of
    the call, and the run folder (for people reading the study)."""
    return {"host": HOST, "pid": os.getpid(), "token": uuid.uuid4().hex, "run": None if run is None else str(run)}


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a zombie (dead, not yet reaped) is dead
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _owner_alive(owner: Any) -> bool:
    """Whether a trial's owner may still be working on it. Owners on other hosts are assumed alive
    (heartbeats decide for database storages); a trial without an owner is an orphan."""
    if not isinstance(owner, dict):
        return False
    if owner.get("host") != HOST:
        return True
    if owner.get("pid") == os.getpid():
        return owner.get("token") in _live_tokens
    return _pid_alive(owner.get("pid"))


@contextmanager
def _claim_lock(study: optuna.Study) -> Iterator[None]:
    """A host-wide lock per study name, under which orphans are claimed (one claimer each)."""
    digest = hashlib.sha256(study.study_name.encode()).hexdigest()[:20]
    path = Path(tempfile.gettempdir()) / f"hessian-lr-claim-{digest}.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def open_study(storage: Any, name: str, fingerprint: str, attrs: dict | None = None) -> optuna.Study:
    """Create or load study ``name``; refuse one made under a different configuration.

    ``attrs`` (e.g. the run's configuration, so remote workers can join) are stored once.
    """
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
    saved = study.user_attrs.get("fingerprint")
    if saved is None:
        study.set_user_attr("fingerprint", fingerprint)
        for key, value in (attrs or {}).items():
            study.set_user_attr(key, value)
    elif saved != fingerprint:
        raise ValueError(f"study {name!r} in this storage was made with another configuration ({saved} != {fingerprint})")
    return study


def _counts(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.FAIL and bool(trial.user_attrs.get(DIVERGED_ATTR))
    )


def _live(trial: FrozenTrial) -> bool:
    return trial.state in (TrialState.RUNNING, TrialState.WAITING)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count towards the budget, in trial-number order: completed ones and diverged
    failures (a trial of a dead worker, or a surplus one, is FAIL without the mark)."""
    return [t for t in study.get_trials(deepcopy=False) if _counts(t)]


def _position(trials: Sequence[FrozenTrial], number: int) -> int:
    """The sampler position of trial ``number``: trials before it that count or still run."""
    return sum(1 for t in trials if t.number < number and (_counts(t) or _live(t)))


@contextmanager
def heartbeats(study: optuna.Study, trial_ids: Sequence[int]) -> Iterator[None]:
    """Record heartbeats for the trials ``trial_ids`` while they are worked on (database storages
    only: there a trial whose heartbeats stop is failed after the grace period and queued again)."""
    storage = api.storage_of(study)
    if not api.heartbeat_enabled(storage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                for trial_id in trial_ids:
                    api.record_heartbeat(storage, trial_id)
            except Exception:  # noqa: BLE001 - the database is gone: the trial's own tell reports it
                return
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, daemon=True, name="hessian-lr-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None, attrs: dict) -> bool:
    """Record the outcome; False if the trial was finished elsewhere meanwhile (a database
    storage failed it as stale: its retry will be trained by whoever takes it)."""
    try:
        for key, attr in attrs.items():
            trial.set_user_attr(key, attr)
        if value is None or not math.isfinite(value):
            trial.set_user_attr(DIVERGED_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
    except Exception as exc:  # noqa: BLE001
        if not api.is_update_finished(exc):
            raise
        return False
    return True


def trial_point(trial: FrozenTrial | optuna.Trial, space: SearchSpace) -> dict:
    """The point a trial stands for: its sampled parameters plus the space's fixed values."""
    return {**{name: trial.params[name] for name in space.tuned}, **space.fixed}


def _evaluate(study: optuna.Study, trials: list[optuna.Trial], objective: BatchObjective, space: SearchSpace,
              on_trial: Callable[[int, dict, float | None], None] | None) -> None:
    points = [trial_point(trial, space) for trial in trials]
    with heartbeats(study, [api.trial_id(trial) for trial in trials]):  # beating while held at the event too
        events.announce("batch-started", study.study_name, ",".join(str(t.number) for t in trials))
        outcomes = objective(points)
    for trial, point, (value, attrs) in zip(trials, points, outcomes):
        told = _tell(study, trial, value, attrs)
        state = ("COMPLETE" if value is not None and math.isfinite(value) else "FAIL") if told else "LOST"
        events.announce("trial-told", study.study_name, trial.number, state)
        if told and on_trial:
            on_trial(trial.number, point, value)


def _sampler(seed: int, position: int) -> optuna.samplers.TPESampler:
    """The sampler for the trial at ``position`` (trials counted or running before it). Seeded by
    the position, so asking together or one by one, or again after a kill, gives the same draws."""
    return optuna.samplers.TPESampler(seed=seed * 1_000_003 + position, constant_liar=True,
                                      n_startup_trials=STARTUP_TRIALS)


def _suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> None:
    """``trial.suggest_*`` for one distribution (Optuna's public API has one method per type)."""
    if isinstance(distribution, FloatDistribution):
        trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)
    elif isinstance(distribution, IntDistribution):
        trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log)
    elif isinstance(distribution, CategoricalDistribution):
        trial.suggest_categorical(name, distribution.choices)
    else:
        raise TypeError(f"unsupported distribution {distribution!r}")


def _draw(study: optuna.Study, trial: int, distributions: dict[str, BaseDistribution], seed: int,
          position: int) -> optuna.Trial:
    """Draw a RUNNING trial's parameters as ``ask`` draws them: a sampler seeded by its position."""
    study.sampler = _sampler(seed, position)
    live = api.live_trial(study, trial)
    for name, distribution in distributions.items():
        _suggest(live, name, distribution)
        events.announce("param-drawn", study.study_name, live.number, name)
    return live


def _ask(study: optuna.Study, distributions: dict[str, BaseDistribution], seed: int, n_trials: int,
         owner: dict[str, Any]) -> optuna.Trial | None:
    """A new trial (or a queued one) owned by ``owner``, its parameters drawn; None if it is
    beyond the budget (closed as surplus)."""
    storage = api.storage_of(study)
    trial = api.pop_waiting_trial(study)
    if trial is not None:
        storage.set_trial_user_attr(trial, OWNER_ATTR, owner)
    else:
        trial = api.create_trial(study, {OWNER_ATTR: owner})
    if api.heartbeat_enabled(storage):
        api.record_heartbeat(storage, trial)  # from its first moment: a kill before training is detected too
    trials = study.get_trials(deepcopy=False)
    number = storage.get_trial(trial).number
    events.announce("trial-asking", study.study_name, number)
    position = _position(trials, number)
    if position >= n_trials:
        storage.set_trial_user_attr(trial, SURPLUS_ATTR, True)
        study.tell(number, state=TrialState.FAIL)
        return None
    return _draw(study, trial, distributions, seed, position)


def _claim_orphans(study: optuna.Study, owner: dict[str, Any], limit: int) -> list[FrozenTrial]:
    """Take over (at most ``limit``) RUNNING trials whose owner is dead, oldest first, each by one
    process; returns them as they are now (owned by ``owner``). Journal storages only: on a
    database, heartbeats decide which trials are dead."""
    if limit <= 0 or api.heartbeat_enabled(api.storage_of(study)):
        return []
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not any(not _owner_alive(t.user_attrs.get(OWNER_ATTR)) for t in running):
        return []
    storage = api.storage_of(study)
    claimed = []
    with _claim_lock(study):
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if len(claimed) >= limit:
                break
            if not _owner_alive(trial.user_attrs.get(OWNER_ATTR)):
                storage.set_trial_user_attr(api.trial_id(trial), OWNER_ATTR, owner)
                claimed.append(trial.number)
    trials = study.get_trials(deepcopy=False)
    return [trials[number] for number in claimed]


def _resume(study: optuna.Study, orphans: list[FrozenTrial], distributions: dict[str, BaseDistribution],
            seed: int) -> list[optuna.Trial]:
    """The claimed orphans as trials to evaluate, their missing parameters drawn.

    A trial with none of its parameters (killed inside ``ask``) gets them drawn exactly as ``ask``
    was drawing them (the same sampler seed, the same history, the same order), under its own
    number. A trial with only some of them (a kill between two parameters of a larger space)
    cannot be completed that way — the draws of the stored ones are gone from the sampler's
    random stream — so it is closed as an abandoned FAIL, which neither counts nor enters TPE's
    history, and the next ``ask`` draws the same point again. Either way the resumed study
    proposes what the uninterrupted one did."""
    keep = []
    for trial in orphans:
        present = [name for name in distributions if name in trial.params]
        if len(present) == len(distributions):
            keep.append(api.live_trial(study, api.trial_id(trial)))
        elif present:
            study.tell(trial.number, state=TrialState.FAIL)
        else:
            position = _position(study.get_trials(deepcopy=False), trial.number)
            keep.append(_draw(study, api.trial_id(trial), distributions, seed, position))
    return keep


def run_study(
    study: optuna.Study,
    objective: BatchObjective,
    *,
    n_trials: int,
    space: SearchSpace,
    seed: int,
    batch_size: int = 1,
    batch_startup: bool = False,
    resume_running: bool = True,
    on_trial: Callable[[int, dict, float | None], None] | None = None,
    owner: dict[str, Any] | None = None,
) -> None:
    """Run trials, ``batch_size`` at a time, until ``n_trials`` count as finished.

    Trials whose owner died are taken over first (see the module docstring), so any number of
    processes may run this on one study at once. ``resume_running``: this process is the only
    one on the study (its trials are then bit-reproducible across kills, and it may batch the
    start-up trials). Batches come from TPE with ``constant_liar`` so the trials of one batch
    spread out.

    ``batch_startup``: TPE's first ``STARTUP_TRIALS`` trials are random draws that depend on
    nothing but the sampler seed, so they are asked together and handed to ``objective`` as one
    batch — the same points, in the same order, as asking them one by one (only for a study
    this process owns; workers sharing a study take them one at a time).

    A space whose every dimension is fixed has nothing to sample: each trial is the same point.
    """
    distributions = space.distributions()
    owner = dict(owner or owner_identity())
    owner.setdefault("token", uuid.uuid4().hex)
    _live_tokens.add(owner["token"])
    try:
        _run(study, objective, n_trials, space, seed, batch_size, batch_startup and resume_running, on_trial, owner,
             distributions)
    finally:
        _live_tokens.discard(owner["token"])


def _run(study: optuna.Study, objective: BatchObjective, n_trials: int, space: SearchSpace, seed: int,
         batch_size: int, batch_startup: bool, on_trial: Callable[[int, dict, float | None], None] | None,
         owner: dict[str, Any], distributions: dict[str, BaseDistribution]) -> None:
    heartbeat = api.heartbeat_enabled(api.storage_of(study))
    chunk = max(batch_size, STARTUP_TRIALS if batch_startup else 1)
    while True:
        budget = n_trials - len(finished_trials(study))
        orphans = _claim_orphans(study, owner, budget)
        if not orphans:
            break
        trials = _resume(study, orphans, distributions, seed)
        for start in range(0, len(trials), chunk):
            _evaluate(study, trials[start : start + chunk], objective, space, on_trial)

    while True:
        if heartbeat:
            api.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(_counts(t) for t in trials)
        if done >= n_trials:
            return
        running = sum(t.state == TrialState.RUNNING for t in trials)
        left = n_trials - done - running
        room = min(batch_size, left)
        if batch_startup and done + running < STARTUP_TRIALS:
            room = max(room, min(STARTUP_TRIALS - done - running, left))
        if room <= 0:  # the rest of the budget is in other processes' hands: wait for them (or their death)
            orphans = _claim_orphans(study, owner, n_trials - done)
            if orphans:
                _evaluate(study, _resume(study, orphans, distributions, seed), objective, space, on_trial)
            else:
                time.sleep(POLL_S)
            continue
        asked = [trial for trial in (_ask(study, distributions, seed, n_trials, owner) for _ in range(room)) if trial]
        if asked:
            _evaluate(study, asked, objective, space, on_trial)
