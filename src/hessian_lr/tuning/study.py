"""Optuna studies that resume: the same command run again continues where it stopped.

Determinism: before each ``ask`` the study gets a fresh ``TPESampler`` seeded from
``(seed, number of finished trials)``. TPE is otherwise a function of the trial history, so a
study interrupted and resumed proposes the same learning rates as one run straight through.
A trial left RUNNING by a killed process is re-evaluated with its own parameters and told to
the study under its own number (nothing redone that finished, nothing skipped).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import BaseStorage
from optuna.trial import TrialState

__all__ = ["storage_for", "open_study", "run_study", "finished_trials", "LR_PARAM"]

LR_PARAM = "lr"
DIVERGED_ATTR = "diverged"
FINISHED = (TrialState.COMPLETE, TrialState.FAIL)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_for(spec: str | None, out: Path) -> BaseStorage:
    """An Optuna storage: ``None`` -> journal file ``out/optuna.journal``; a URL with ``://``
    (``sqlite:///...``, ``postgresql+psycopg2://...``) -> RDB storage with heartbeats, so trials of
    dead workers are detected and retried; anything else -> a journal file at that path."""
    if spec and "://" in spec:
        return optuna.storages.RDBStorage(
            spec,
            heartbeat_interval=10,
            grace_period=30,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=3),
        )
    path = Path(spec) if spec else out / "optuna.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def open_study(storage: BaseStorage, name: str, fingerprint: str) -> optuna.Study:
    """Create or load study ``name``; refuse one made under a different configuration."""
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
    saved = study.user_attrs.get("fingerprint")
    if saved is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif saved != fingerprint:
        raise ValueError(f"study {name!r} in this storage was made with another configuration ({saved} != {fingerprint})")
    return study


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards the budget, in order: completed ones and diverged failures
    (a retried trial of a dead worker is FAIL without the ``diverged`` mark and does not count)."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    return [t for t in trials if t.state == TrialState.COMPLETE or t.user_attrs.get(DIVERGED_ATTR)]


Objective = Callable[[float], "tuple[float | None, dict]"]


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None, attrs: dict) -> None:
    for key, attr in attrs.items():
        trial.set_user_attr(key, attr)
    if value is None or not math.isfinite(value):
        trial.set_user_attr(DIVERGED_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, value)


def run_study(
    study: optuna.Study,
    objective: Objective,
    *,
    n_trials: int,
    lr_range: tuple[float, float],
    seed: int,
    resume_running: bool = True,
    on_trial: Callable[[int, float, float | None], None] | None = None,
) -> None:
    """Run trials until ``n_trials`` have finished. ``objective(lr) -> (value | None, attrs)``;
    ``None`` (or a non-finite value) marks the trial FAIL as diverged and the study goes on.

    ``resume_running``: re-evaluate RUNNING trials, which is right when this process owns the
    study (nobody else can be running them); workers sharing a study leave them to heartbeats.
    """
    distribution = FloatDistribution(lr_range[0], lr_range[1], log=True)

    if resume_running:
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if len(finished_trials(study)) >= n_trials:
                break
            trial = optuna.Trial(study, frozen._trial_id)
            lr = trial.suggest_float(LR_PARAM, *lr_range, log=True)
            value, attrs = objective(lr)
            _tell(study, trial, value, attrs)
            if on_trial:
                on_trial(frozen.number, lr, value)

    while (done := len(finished_trials(study))) < n_trials:
        study.sampler = optuna.samplers.TPESampler(seed=seed * 1_000_003 + done)
        trial = study.ask({LR_PARAM: distribution})
        lr = trial.params[LR_PARAM]
        value, attrs = objective(lr)
        _tell(study, trial, value, attrs)
        if on_trial:
            on_trial(trial.number, lr, value)
