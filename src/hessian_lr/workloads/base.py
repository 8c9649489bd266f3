"""What a workload is: data, model, loss, objective, default budget, reference result, curvature route.

The split follows AlgoPerf (workload vs. optimizer): everything here is fixed per workload, and an
optimizer sees only ``objective = loss_fn(model(x), y) + (l2/2)·Σ_p ‖p‖²``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn

from hessian_lr.workloads.data import Loaders, Splits, WorkloadData

__all__ = ["Reference", "Workload", "Metric", "bits_per_token", "steps_to_accuracy", "TASKS", "CURVATURE_ROUTES"]

TASKS = ("classification", "regression")
# How the exact Hessian diagonal is computed (hessian_lr.analysis.exact.workload_hessian_diagonal):
# "closed-form"  the model knows its Hessian (the quadratics): no data pass at all;
# "gauss-newton" every layer enters the output piecewise linearly, so diag(H) = diag(GN): one
#                backward per output column of the loss-Hessian factor (classes, or outputs for MSE);
# "hvp"          anything else: Hessian-vector products (per module output where the module's rule
#                applies, per parameter coordinate otherwise).
# "none"         no exact diagonal: the model is too large for per-coordinate products (the
#                CIFAR-10 networks, the character GPT), so no fidelity study runs on it.
CURVATURE_ROUTES = ("closed-form", "gauss-newton", "hvp", "none")


@dataclass(frozen=True)
class Reference:
    """A result about the workload that comes from outside the benchmark, and how it is checked.

    Attributes:
        metric: what is compared, e.g. ``"test_accuracy"``, ``"train_objective"``, ``"val_loss"``.
        value: the reference number.
        tolerance: the absolute band the check allows around ``value`` (its meaning is in ``check``).
        source: where the number comes from (paper, URL, or the independent computation).
        check: how it is checked, naming the test that does it.
    """

    metric: str
    value: float
    tolerance: float
    source: str
    check: str

    def render(self) -> str:
        """One line for docs and reports."""
        return f"{self.metric} {self.value:.4g} (±{self.tolerance:.2g}); source: {self.source}; checked: {self.check}"


@dataclass(frozen=True)
class Metric:
    """A result a workload reports beyond loss and accuracy, computed from each run's evaluations.

    Attributes:
        name: its key in a run's ``metrics`` (results.json).
        compute: ``compute(evaluations)`` → the value (None where it does not exist, e.g. a target
            never reached). ``evaluations`` holds ``val_loss``, ``val_loss_curve``, ``eval_steps``
            (the step of every curve entry), ``val_accuracy_curve`` (None unless
            :attr:`reads_accuracy`), ``test_loss`` and ``test_accuracy``.
        reads_accuracy: the validation accuracy is measured at every evaluation for it.
    """

    name: str
    compute: Callable[[Mapping[str, Any]], float | None]
    reads_accuracy: bool = False


def _bits(loss: float | None) -> float | None:
    return None if loss is None else loss / math.log(2)


def bits_per_token(name: str = "val_bits_per_char") -> Metric:
    """The final validation loss in bits (loss / ln 2): bits per character for a character model."""
    return Metric(name, lambda evaluations: _bits(evaluations["val_loss"]))


def steps_to_accuracy(target: float, name: str = "steps_to_target") -> Metric:
    """The first evaluated step whose validation accuracy reaches ``target`` (AlgoPerf's
    time-to-result, counted in steps at the evaluation interval); None where none does."""
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target}")

    def first_step(evaluations: Mapping[str, Any]) -> float | None:
        for step, accuracy in zip(evaluations["eval_steps"], evaluations["val_accuracy_curve"]):
            if accuracy is not None and accuracy >= target:
                return float(step)
        return None

    return Metric(name, first_step, reads_accuracy=True)


@dataclass(frozen=True)
class Workload:
    """Data + model + loss + default budget (+ the reference result and the exact-curvature route).

    Attributes:
        name: registry key (``--workload``).
        description: one paragraph for ``--help``, docs and reports (sizes, not timings: those
            live in ``docs/workloads.md``).
        load_data: builds the data (offline; cached by :attr:`data`): in-memory
            :class:`~hessian_lr.workloads.data.Splits` (the fast path) or
            :class:`~hessian_lr.workloads.data.Loaders` of minibatches.
        build_model: a fresh model; callers seed torch's global RNG first, so the same seed gives
            the same initial weights. BatchNorm, dropout and other buffers are allowed: such a
            model trains in train mode and is evaluated in eval mode under ``torch.no_grad()``,
            one model at a time (models without them may also train K at once, stacked under
            ``torch.func.functional_call`` + ``vmap``).
        loss_fn: ``loss_fn(outputs, targets)`` → the mean over the minibatch's rows (vmappable for
            stacked training).
        batch_size, epochs: the default budget (``batch_size`` slices :class:`Splits`; a
            :class:`Loaders` stream has its own).
        steps: a default budget in optimizer steps instead of epochs (None: ``epochs``).
        eval_every: the default evaluation interval in steps (None: after every epoch).
        eval_batch_size: rows per evaluation minibatch of :class:`Splits` (None: a split at once,
            for the small in-memory workloads).
        metrics: results beyond loss and accuracy (:class:`Metric`), recorded per run.
        task: ``"classification"`` (outputs are logits ``[N, C]``; accuracy = argmax over the
            last dim) or ``"regression"`` (no accuracy).
        l2: the objective adds ``(l2/2)·Σ_p ‖p‖²`` over all parameters (:meth:`penalty`).
        reference: the independent result (:class:`Reference`), or None.
        curvature: the exact Hessian-diagonal route, one of :data:`CURVATURE_ROUTES`.
    """

    name: str
    description: str
    load_data: Callable[[], WorkloadData]
    build_model: Callable[[], nn.Module]
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy
    batch_size: int = 100
    epochs: int = 20
    task: str = "classification"
    l2: float = 0.0
    reference: Reference | None = None
    curvature: str = "gauss-newton"
    steps: int | None = None
    eval_every: int | None = None
    eval_batch_size: int | None = None
    metrics: tuple[Metric, ...] = ()

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.curvature not in CURVATURE_ROUTES:
            raise ValueError(f"curvature must be one of {CURVATURE_ROUTES}, got {self.curvature!r}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        for name in ("batch_size", "epochs", "steps", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

    @property
    def data(self) -> WorkloadData:
        """The data (:class:`Splits` or :class:`Loaders`), built once per process."""
        return _cached_data(self.load_data)

    @property
    def in_memory(self) -> bool:
        """Whether the data are in-memory :class:`Splits` (the fast path; stackable)."""
        return isinstance(self.data, Splits)

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch: batches of :attr:`batch_size` over the training rows, or
        the :class:`Loaders`' epoch length."""
        data = self.data
        if isinstance(data, Loaders):
            return data.epoch_length()
        return math.ceil(len(data.x_train) / self.batch_size)

    def penalty(self, params: Iterable[Tensor]) -> Tensor | float:
        """``(l2/2)·Σ_p ‖p‖²`` over ``params`` (all of the model's parameters); 0.0 when ``l2 == 0``.

        Pure tensor ops, so it works under ``torch.func.grad``/``vmap`` on stacked parameters.
        """
        if self.l2 == 0:
            return 0.0
        return 0.5 * self.l2 * sum(p.square().sum() for p in params)

    def objective(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The training objective on rows ``(x, y)``: ``loss_fn(model(x), y) + penalty``."""
        return self.loss_fn(model(x), y) + self.penalty(model.parameters())

    def accuracy(self, outputs: Tensor, targets: Tensor) -> Tensor | None:
        """Fraction of rows whose argmax over the last dim is the label; None for regression."""
        if self.task != "classification":
            return None
        return (outputs.argmax(dim=-1) == targets).to(torch.float32).mean()


@lru_cache(maxsize=None)
def _cached_data(load: Callable[[], WorkloadData]) -> WorkloadData:
    return load()
