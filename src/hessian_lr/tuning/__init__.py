"""Learning-rate tuning on Optuna studies: storages, deterministic sampling, resume."""

from hessian_lr.tuning.study import finished_trials, open_study, run_study, storage_for

__all__ = ["open_study", "run_study", "storage_for", "finished_trials"]
