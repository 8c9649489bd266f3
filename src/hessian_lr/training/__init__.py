"""Training: one epoch skeleton (``loop``) for one model (``single``) or K at once (``stacked``)."""

from hessian_lr.training.loop import Run, RunResult, initial_model, seed_everything, train, train_run

__all__ = ["Run", "RunResult", "initial_model", "seed_everything", "train", "train_run"]
