"""The records every part of training shares: what a run is, what it returns, and its RNG streams.

A leaf module (it imports nothing else of :mod:`hessian_lr.training`), so the skeleton
(:mod:`~hessian_lr.training.loop`) and the model sets (:mod:`~hessian_lr.training.single`,
:mod:`~hessian_lr.training.stacked`, :mod:`~hessian_lr.training.stacking`) import it one way.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from hessian_lr.workloads import Workload

__all__ = ["Run", "RunResult", "ModelSet", "Progress", "seed_everything", "initial_model", "GLOBAL_RNG_LOCK",
           "ModelRNG"]

# ``progress(count)``: that many model-evaluation periods are done (trained, or skipped after
# divergence): model-epochs under an epoch budget, model-evaluation intervals under --eval-every.
Progress = Callable[[int], None]

# RunResult fields that exist only for step budgets, evaluation intervals and workload metrics;
# results.json leaves them out where they are unset, so today's epoch runs write today's records.
_OPTIONAL_FIELDS = ("steps", "eval_steps", "val_accuracy_curve", "metrics")


@dataclass(frozen=True)
class Run:
    """One model to train: the optimizer's constructor hyperparameters and the seed."""

    hyperparameters: Mapping[str, Any]
    seed: int

    @property
    def lr(self) -> float | None:
        lr = self.hyperparameters.get("lr")
        return None if lr is None else float(lr)


@dataclass
class RunResult:
    """One training run. ``None`` marks a loss never reached (the run diverged before).

    ``val_loss_curve[i]`` is the validation loss after ``eval_steps[i]`` optimizer steps; under an
    epoch budget without an evaluation interval ``eval_steps`` is None and entry ``i`` is after
    epoch ``i`` (entry 0: before training).
    """

    lr: float | None
    seed: int
    epochs: int
    val_loss_curve: list[float | None]  # epoch 0 (before training) .. epochs
    val_loss: float | None  # the last entry of the curve
    test_loss: float | None = None
    test_accuracy: float | None = None
    wall_s: float = 0.0
    epoch_wall_s: list[float] = field(default_factory=list)  # cumulative seconds at each evaluation after the first
    diverged: bool = False
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    steps_per_epoch: int = 0
    steps: int | None = None  # the step budget (None: epochs x steps_per_epoch)
    eval_steps: list[int] | None = None  # the step of each curve entry (step budgets, --eval-every)
    val_accuracy_curve: list[float | None] | None = None  # where the workload's metrics read it
    metrics: dict[str, float | None] | None = None  # the workload's own metrics (Workload.metrics)

    def to_dict(self) -> dict:
        record = asdict(self)
        for name in _OPTIONAL_FIELDS:
            if record[name] is None:
                del record[name]
        return record


class ModelSet(Protocol):
    """K models being trained together (K = 1 for :class:`~hessian_lr.training.single.SingleModel`).

    Positions ``0 .. size-1`` index the models still in the set, in the order of the runs
    given at construction minus the dropped ones.
    """

    size: int

    def train_mode(self) -> None: ...

    def eval_mode(self) -> None: ...

    def step(self, x: Tensor, y: Tensor) -> Tensor | None:
        """One optimizer step of every model that is not stopped, on its minibatch ``x[k]``,
        ``y[k]``. Returns a bool mask of the models whose gradient was non-finite in this step
        (they are stopped until :meth:`resume`), or None when there were none."""

    def resume(self) -> None:
        """Clear the stopped marks (a new evaluation period begins)."""

    def evaluate(self, x: Tensor, y: Tensor, accuracy: bool) -> tuple[Tensor, Tensor | None]:
        """Per-model mean loss ``[size]`` (and accuracy ``[size]``) on shared inputs (one minibatch)."""

    def keep(self, positions: Sequence[int]) -> None:
        """Drop every model but those at ``positions``."""


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Initial weights, and whatever an optimizer or a stochastic forward (dropout) draws, come from the
# process-global RNGs. Runs trained at once in several threads of one process (lanes) take this lock
# around every use of the global state — seeding and drawing a model, swapping a model's own stream in
# and out (ModelRNG) — so that each model sees the stream it sees when trained alone. Reentrant:
# ModelRNG.initial holds it across initial_model.
GLOBAL_RNG_LOCK = threading.RLock()


def initial_model(workload: Workload, seed: int) -> nn.Module:
    """``workload.build_model()`` right after ``seed_everything(seed)``: the weights every run
    with ``seed`` starts from, whichever arm trains it."""
    with GLOBAL_RNG_LOCK:
        seed_everything(seed)
        return workload.build_model()


class ModelRNG:
    """One model's own stream of torch's global RNG: the state the global generator would be in
    for this model had it trained alone in its process (seeded, its weights drawn, then whatever
    its optimizer and its forward passes drew so far).

    :meth:`active` swaps that state in for a block (building the optimizer, a step, a forward with
    dropout) and back out, under :data:`GLOBAL_RNG_LOCK`, so neither another model of the same
    process nor another lane drawing its initial weights sees or moves it.
    """

    def __init__(self, state: Tensor, cuda: tuple[torch.device, Tensor] | None = None) -> None:
        self.state = state
        self.cuda = cuda  # (device, its generator's state) where the model trains on a CUDA device

    @classmethod
    def initial(cls, workload: Workload, seed: int,
                device: torch.device | None = None) -> tuple[nn.Module, ModelRNG]:
        """:func:`initial_model` and the global RNG state right after it, taken atomically. On a
        CUDA ``device`` the stream also holds that device's generator (which dropout there draws
        from), seeded with ``seed`` as :func:`seed_everything` seeds every device."""
        with GLOBAL_RNG_LOCK:
            model = initial_model(workload, seed)
            cuda = None
            if device is not None and device.type == "cuda":
                cuda = (device, torch.cuda.get_rng_state(device))
            return model, cls(torch.get_rng_state(), cuda)

    def copy(self) -> ModelRNG:
        """An independent stream starting from the same state (another model of the same seed)."""
        return ModelRNG(self.state.clone(), None if self.cuda is None else (self.cuda[0], self.cuda[1].clone()))

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with GLOBAL_RNG_LOCK:
            outer = torch.get_rng_state()
            torch.set_rng_state(self.state)
            outer_cuda = None
            if self.cuda is not None:
                outer_cuda = torch.cuda.get_rng_state(self.cuda[0])
                torch.cuda.set_rng_state(self.cuda[1], self.cuda[0])
            try:
                yield
            finally:
                self.state = torch.get_rng_state()
                torch.set_rng_state(outer)
                if self.cuda is not None:
                    self.cuda = (self.cuda[0], torch.cuda.get_rng_state(self.cuda[0]))
                    torch.cuda.set_rng_state(outer_cuda, self.cuda[0])
