"""Optuna studies that resume: the same command run again continues where it stopped.

A study tunes the dimensions of a :class:`~hessian_lr.tuning.space.SearchSpace`: each trial's
``params`` hold a point of it (fixed dimensions are not sampled; the objective adds them).

Determinism: before each ``ask`` the study gets a fresh ``TPESampler`` seeded from
``(seed, number of finished trials)``. TPE is otherwise a function of the trial history, so a
study interrupted and resumed proposes the same points as one run straight through
(in sequential mode: one process per study, one trial at a time).

Interrupted trials:
- one process owns the study (``resume_running=True``): a trial left RUNNING by a killed run is
  re-evaluated with its own parameters and told under its own number (a run killed inside
  ``ask`` leaves one without all its parameters: they are drawn as ``ask`` was drawing them). Batches: a kill
  while a batch trains retrains the same batch; a kill while its trials are asked or told
  retrains the unfinished ones as a smaller batch (float tolerance, budget unchanged);
- workers share the study through an RDB storage: each trial sends heartbeats; a trial whose
  worker died is failed after the grace period and re-queued (``RetryFailedTrialCallback``);
- workers share a journal file on one machine: the launching process (which holds the run
  folder's lock) re-queues RUNNING trials before starting them (:func:`requeue_running`).

Journal files are locked with ``fcntl.flock`` (:class:`KernelJournalLock`), which dies with its
process: a killed run never leaves a stale lock for the next one to wait out.

Budget: exactly ``n_trials`` trials count (completed, or failed because training diverged).
Workers asking concurrently can overshoot; a trial asked beyond the budget is closed at once as
FAIL marked ``surplus`` (never trained, never counted).
"""

from __future__ import annotations

import fcntl
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hessian_lr.tuning.space import SearchSpace

__all__ = ["storage_for", "journal_storage", "KernelJournalLock", "open_study", "run_study", "finished_trials",
           "requeue_running", "trial_point"]

DIVERGED_ATTR = "diverged"
SURPLUS_ATTR = "surplus"
# How often a running trial reports to an RDB storage, and how long silence means a dead worker.
HEARTBEAT_S = int(os.environ.get("HESSIAN_LR_HEARTBEAT_S", 5))
GRACE_S = int(os.environ.get("HESSIAN_LR_GRACE_S", 20))
POLL_S = 1.0
STARTUP_TRIALS = 10  # TPE's random start-up trials (Optuna's default)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# objective(points) -> one (value or None, user attributes) per point of the space (the sampled
# dimensions and the fixed ones); None marks a diverged run.
BatchObjective = Callable[[Sequence[dict]], list[tuple[float | None, dict]]]


def storage_for(spec: str | None, out: Path) -> BaseStorage:
    """An Optuna storage: ``None`` -> journal file ``out/optuna.journal``; a URL with ``://``
    (``sqlite:///...``, ``postgresql+psycopg2://...``) -> RDB storage with heartbeats, so trials of
    dead workers are detected and retried; anything else -> a journal file at that path."""
    if spec and "://" in spec:
        import sqlalchemy.exc

        for attempt in range(3):
            try:
                return optuna.storages.RDBStorage(
                    spec,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=3),
                )
            except sqlalchemy.exc.IntegrityError:  # another process created the schema at the same moment
                if attempt == 2:
                    raise
                time.sleep(0.5)
    path = Path(spec) if spec else out / "optuna.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return journal_storage(path)


class KernelJournalLock:
    """The journal's write lock as ``fcntl.flock`` on ``<journal>.flock`` (Optuna's journal lock
    interface: ``acquire``/``release``, as ``JournalFileBackend(lock_obj=...)`` takes it).

    The kernel drops a flock when its process dies, so a run killed with SIGKILL in the middle of
    a write never leaves a stale lock behind. (Optuna's default lock is a symlink, made for NFSv2;
    a killed holder leaves it, and the next run waits out a 30 s grace period before breaking
    it.) Every process and thread of hessian-lr that writes a journal uses this lock; an Optuna
    program of your own writing the same journal at the same time must pass it too
    (``JournalFileBackend(path, lock_obj=KernelJournalLock(path))``).
    """

    def __init__(self, journal_path: str) -> None:
        self.path = journal_path + ".flock"
        self._held = threading.local()  # the descriptor a thread holds the lock through

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._held.fd = fd
        return True

    def release(self) -> None:
        fd = getattr(self._held, "fd", None)
        if fd is None:
            raise RuntimeError("Error: did not possess lock")
        self._held.fd = None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def journal_storage(path: Path | str) -> optuna.storages.JournalStorage:
    """An Optuna journal-file storage at ``path`` locked with :class:`KernelJournalLock`."""
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=KernelJournalLock(str(path))))


def open_study(storage: BaseStorage, name: str, fingerprint: str, attrs: dict | None = None) -> optuna.Study:
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


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count towards the budget, in trial-number order: completed ones and diverged
    failures (a trial of a dead worker, or a surplus one, is FAIL without the mark)."""
    return [t for t in study.get_trials(deepcopy=False) if _counts(t)]


def requeue_running(study: optuna.Study) -> int:
    """Fail every RUNNING trial and queue its parameters again; only for a caller that knows no
    worker is alive (it holds the run folder's lock). Returns how many were re-queued."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in running:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
    return len(running)


@contextmanager
def _heartbeats(study: optuna.Study, trials: Sequence[optuna.Trial]) -> Iterator[None]:
    """Record heartbeats for ``trials`` while they train (RDB storages only)."""
    storage = study._storage
    if not hasattr(storage, "record_heartbeat") or not optuna.storages._heartbeat.is_heartbeat_enabled(storage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in trials:
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None, attrs: dict) -> None:
    for key, attr in attrs.items():
        trial.set_user_attr(key, attr)
    if value is None or not math.isfinite(value):
        trial.set_user_attr(DIVERGED_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, value)


def trial_point(trial: FrozenTrial | optuna.Trial, space: SearchSpace) -> dict:
    """The point a trial stands for: its sampled parameters plus the space's fixed values."""
    return {**{name: trial.params[name] for name in space.tuned}, **space.fixed}


def _evaluate(study: optuna.Study, trials: list[optuna.Trial], objective: BatchObjective, space: SearchSpace,
              on_trial: Callable[[int, dict, float | None], None] | None) -> None:
    points = [trial_point(trial, space) for trial in trials]
    with _heartbeats(study, trials):
        outcomes = objective(points)
    for trial, point, (value, attrs) in zip(trials, points, outcomes):
        _tell(study, trial, value, attrs)
        if on_trial:
            on_trial(trial.number, point, value)


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
) -> None:
    """Run trials, ``batch_size`` at a time, until ``n_trials`` count as finished.

    ``resume_running``: re-evaluate RUNNING trials, right when this process owns the study.
    Batches come from TPE with ``constant_liar`` so the trials of one batch spread out.

    ``batch_startup``: TPE's first ``STARTUP_TRIALS`` trials are random draws that depend on
    nothing but the sampler seed, so they are asked together and handed to ``objective`` as one
    batch — the same points, in the same order, as asking them one by one (only for a study
    this process owns; workers sharing a study take them one at a time).

    A space whose every dimension is fixed has nothing to sample: each trial is the same point.
    """
    distributions = space.distributions()
    heartbeat = optuna.storages._heartbeat.is_heartbeat_enabled(study._storage)

    batch_startup = batch_startup and resume_running
    if resume_running:
        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        budget = n_trials - len(finished_trials(study))
        stale = stale[: max(budget, 0)]
        stale = _draw_missing_params(study, stale, distributions, seed)
        chunk = max(batch_size, STARTUP_TRIALS if batch_startup else 1)
        for start in range(0, len(stale), chunk):
            trials = [optuna.Trial(study, t._trial_id) for t in stale[start : start + chunk]]
            _evaluate(study, trials, objective, space, on_trial)

    while True:
        if heartbeat:
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(_counts(t) for t in trials)
        if done >= n_trials:
            return
        running = sum(t.state == TrialState.RUNNING for t in trials)
        left = n_trials - done - running
        room = min(batch_size, left)
        if batch_startup and done + running < STARTUP_TRIALS:
            room = max(room, min(STARTUP_TRIALS - done - running, left))
        if room <= 0:  # the rest of the budget is in other workers' hands; wait for them
            time.sleep(POLL_S)
            continue
        asked = []
        for position in range(done, done + room):
            study.sampler = _sampler(seed, position)
            asked.append(study.ask(distributions))
        kept = _drop_surplus(study, asked, n_trials)
        if kept:
            _evaluate(study, kept, objective, space, on_trial)


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


def _draw_missing_params(study: optuna.Study, stale: list[FrozenTrial], distributions: dict[str, BaseDistribution],
                         seed: int) -> list[FrozenTrial]:
    """Complete the RUNNING trials that a run killed inside ``ask`` left without parameters, and
    return the trials to re-evaluate.

    A trial with none of its parameters gets them drawn exactly as ``ask`` was drawing them (the
    same sampler seed, the same history, the same order), under its own number. A trial with only
    some of them (a kill between two parameters of a larger space) cannot be completed that way —
    the draws of the stored ones are gone from the sampler's random stream — so it is closed as an
    abandoned FAIL, which neither counts nor enters TPE's history, and the next ``ask`` draws
    the same point again. Either way the resumed study proposes what the uninterrupted one did.
    """
    trials = study.get_trials(deepcopy=False)
    keep = []
    for trial in stale:
        present = [name for name in distributions if name in trial.params]
        if len(present) == len(distributions):
            keep.append(trial)
            continue
        if present:
            study.tell(trial.number, state=TrialState.FAIL)
            continue
        position = sum(1 for t in trials if t.number < trial.number and (_counts(t) or t.state == TrialState.RUNNING))
        study.sampler = _sampler(seed, position)
        live = optuna.Trial(study, trial._trial_id)
        for name, distribution in distributions.items():
            _suggest(live, name, distribution)
        keep.append(trial)
    return keep


def _drop_surplus(study: optuna.Study, asked: list[optuna.Trial], n_trials: int) -> list[optuna.Trial]:
    """Keep a trial only if fewer than ``n_trials`` live-or-counted trials precede it."""
    trials = study.get_trials(deepcopy=False)
    live = sorted(t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING) or _counts(t))
    kept = []
    for trial in asked:
        if sum(number < trial.number for number in live) < n_trials:
            kept.append(trial)
        else:
            trial.set_user_attr(SURPLUS_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
    return kept
