"""Training: one model, read top to bottom (``loop``)."""

from hessian_lr.training.loop import RunResult, seed_everything, train_run

__all__ = ["RunResult", "seed_everything", "train_run"]
