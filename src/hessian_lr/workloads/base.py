"""What a workload is: data, model, loss, objective, default budget, reference result, curvature route.

The split follows AlgoPerf (workload vs. optimizer): everything here is fixed per workload, and an
optimizer sees only ``objective = loss_fn(model(x), y) + (l2/2)·Σ_p ‖p‖²``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

from hessian_lr.workloads.data import Splits

__all__ = ["Reference", "Workload", "TASKS", "CURVATURE_ROUTES"]

TASKS = ("classification", "regression")
# How the exact Hessian diagonal is computed (hessian_lr.analysis.exact.workload_hessian_diagonal):
# "closed-form"  the model knows its Hessian (the quadratics): no data pass at all;
# "gauss-newton" every layer enters the output piecewise linearly, so diag(H) = diag(GN): one
#                backward per output column of the loss-Hessian factor (classes, or outputs for MSE);
# "hvp"          anything else: Hessian-vector products (per module output where the module's rule
#                applies, per parameter coordinate otherwise).
CURVATURE_ROUTES = ("closed-form", "gauss-newton", "hvp")


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
class Workload:
    """Data + model + loss + default budget (+ the reference result and the exact-curvature route).

    Attributes:
        name: registry key (``--workload``).
        description: one paragraph for ``--help``, docs and reports (sizes, measured one-run time).
        load_data: builds the :class:`~hessian_lr.workloads.data.Splits` (offline; cached by
            :attr:`data`).
        build_model: a fresh model; callers seed torch's global RNG first, so the same seed gives
            the same initial weights. No buffers that change, no dropout; works under
            ``torch.func.functional_call`` + ``vmap`` over stacked parameters.
        loss_fn: ``loss_fn(outputs, targets)`` → the mean over the minibatch's rows (vmappable).
        batch_size, epochs: the default budget.
        task: ``"classification"`` (outputs are logits ``[N, C]``; accuracy = argmax over the
            last dim) or ``"regression"`` (no accuracy).
        l2: the objective adds ``(l2/2)·Σ_p ‖p‖²`` over all parameters (:meth:`penalty`).
        reference: the independent result (:class:`Reference`), or None.
        curvature: the exact Hessian-diagonal route, one of :data:`CURVATURE_ROUTES`.
    """

    name: str
    description: str
    load_data: Callable[[], Splits]
    build_model: Callable[[], nn.Module]
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy
    batch_size: int = 100
    epochs: int = 20
    task: str = "classification"
    l2: float = 0.0
    reference: Reference | None = None
    curvature: str = "gauss-newton"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.curvature not in CURVATURE_ROUTES:
            raise ValueError(f"curvature must be one of {CURVATURE_ROUTES}, got {self.curvature!r}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")

    @property
    def data(self) -> Splits:
        """The splits, built once per process."""
        return _cached_data(self.load_data)

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
def _cached_data(load: Callable[[], Splits]) -> Splits:
    return load()
