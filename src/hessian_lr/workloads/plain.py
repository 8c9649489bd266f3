"""A deliberately plain training loop for checking workloads: references, budgets, wall times.

Independent of :mod:`hessian_lr.training` on purpose, so a workload's reference result is checked
against the workload definition alone: seed torch's global RNG, build the model, shuffle the
training rows each epoch with a generator seeded from the same seed, step a torch optimizer on
``workload.objective``, evaluate on the validation (and test) rows after each epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from hessian_lr.workloads.base import Workload

__all__ = ["PlainRun", "train_plain", "evaluate"]


@dataclass
class PlainRun:
    """The outcome of :func:`train_plain`. Losses are ``loss_fn`` values without the penalty."""

    model: nn.Module
    val_loss: list[float] = field(default_factory=list)  # epoch 0 (before training) .. epochs
    val_accuracy: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time over the same span: steadier than wall time on a busy machine


@torch.no_grad()
def evaluate(workload: Workload, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float | None]:
    """(mean loss, accuracy or None) of ``model`` on the rows ``(x, y)``."""
    outputs = model(x)
    accuracy = workload.accuracy(outputs, y)
    return float(workload.loss_fn(outputs, y)), None if accuracy is None else float(accuracy)


def train_plain(
    workload: Workload,
    lr: float,
    seed: int = 0,
    *,
    epochs: int | None = None,
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
    test: bool = True,
) -> PlainRun:
    """Train one model of ``workload`` with ``optimizer(params, lr=lr)`` for ``epochs`` (default:
    the workload's budget) and return its curves, final metrics and wall time (training and
    per-epoch validation; the data are built before the clock starts).

    Args:
        workload: the workload.
        lr: the learning rate.
        seed: seeds the initial weights (global RNG) and the batch order (own generator).
        epochs: overrides the workload's budget.
        optimizer: a ``torch.optim`` class or factory taking ``(params, lr=...)``.
        test: also evaluate on the test rows at the end.
    """
    data = workload.data
    epochs = workload.epochs if epochs is None else epochs
    torch.manual_seed(seed)
    model = workload.build_model()
    params = list(model.parameters())
    opt = optimizer(params, lr=lr)
    order = torch.Generator().manual_seed(seed)
    n, batch = len(data.x_train), workload.batch_size
    run = PlainRun(model=model)
    start, cpu_start = time.perf_counter(), time.process_time()
    run.val_loss.append(evaluate(workload, model, data.x_val, data.y_val)[0])
    for _ in range(epochs):
        perm = torch.randperm(n, generator=order)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = workload.objective(model, data.x_train[idx], data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val_loss, run.val_accuracy = evaluate(workload, model, data.x_val, data.y_val)
        run.val_loss.append(val_loss)
    run.wall_s = time.perf_counter() - start
    run.cpu_s = time.process_time() - cpu_start
    if test:
        run.test_loss, run.test_accuracy = evaluate(workload, model, data.x_test, data.y_test)
    return run
