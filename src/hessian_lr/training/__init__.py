"""Training: one skeleton (``loop``) for one model (``single``) or K at once (``stacked``), on
in-memory data or loaders, on any device (``placement``); the shared records in ``records``."""

from hessian_lr.training.loop import can_stack, train, train_run
from hessian_lr.training.placement import Placement, device_record, resolve_placement
from hessian_lr.training.records import Run, RunResult, initial_model, seed_everything

__all__ = ["Run", "RunResult", "initial_model", "seed_everything", "train", "train_run", "can_stack", "Placement",
           "resolve_placement", "device_record"]
