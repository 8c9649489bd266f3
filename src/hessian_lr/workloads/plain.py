"""One model of a workload trained by a torch optimizer class, for checking workloads: references,
budgets, wall times.

It is the training skeleton (:func:`hessian_lr.training.loop.run_schedule`) with one
:class:`~hessian_lr.training.single.SingleModel` — not a loop of its own — so a workload's
reference result is checked through the same code that trains it in a comparison: seed the global
RNG, build the model, shuffle the training rows each epoch with a generator seeded from the same
seed, step the optimizer on ``workload.objective``, evaluate the validation rows after each epoch
(and the test rows at the end).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from hessian_lr.workloads.base import Workload

__all__ = ["PlainRun", "train_plain"]


@dataclass
class PlainRun:
    """The outcome of :func:`train_plain`. Losses are ``loss_fn`` values without the penalty."""

    model: nn.Module
    val_loss: list[float | None] = field(default_factory=list)  # epoch 0 (before training) .. epochs
    val_accuracy: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time over the same span: steadier than wall time on a busy machine


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
    the workload's budget) and return its curves, final metrics and time (training and per-epoch
    validation; the data are built before the clock starts).

    Args:
        workload: the workload.
        lr: the learning rate.
        seed: seeds the initial weights (global RNG) and the batch order (own generator).
        epochs: overrides the workload's budget.
        optimizer: a ``torch.optim`` class or factory taking ``(params, lr=...)``.
        test: also evaluate on the test rows at the end.
    """
    from hessian_lr.arms import Arm
    from hessian_lr.training.loop import Schedule, batches_of, evaluate_batches, run_schedule
    from hessian_lr.training.records import Run
    from hessian_lr.training.single import SingleModel

    workload.data  # built before the clock starts
    arm = Arm(name=getattr(optimizer, "__name__", "optimizer"), build=lambda params, lr: optimizer(params, lr=lr))
    run = Run({"lr": lr}, seed)
    models = SingleModel(workload, arm, run)
    batches = batches_of(workload, seed, "cpu")
    start, cpu_start = time.perf_counter(), time.process_time()
    [result] = run_schedule(workload, models, [run], batches,
                            Schedule(workload.steps_per_epoch(), workload.epochs if epochs is None else epochs),
                            evaluate_test=test)
    outcome = PlainRun(model=models.model, val_loss=result.val_loss_curve, test_loss=result.test_loss,
                       test_accuracy=result.test_accuracy, wall_s=time.perf_counter() - start,
                       cpu_s=time.process_time() - cpu_start)
    if workload.task == "classification":
        models.eval_mode()
        outcome.val_accuracy = evaluate_batches(models, batches.val(), accuracy=True)[1][0]
    return outcome
