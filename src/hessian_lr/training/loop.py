"""Train one model on a workload with one optimizer arm, nanoGPT-style: read it top to bottom."""

from __future__ import annotations

import math
import random
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from hessian_lr.arms import Arm
from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.workloads import Workload

__all__ = ["RunResult", "seed_everything", "initial_model", "train_run", "evaluate", "GLOBAL_RNG_LOCK"]

# torch warns once that backward(create_graph=True) makes a parameter <-> gradient reference cycle;
# train_run breaks it by setting every gradient to None right after each step.
warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True", category=UserWarning)


@dataclass
class RunResult:
    """One training run. Losses are mean cross-entropy; ``None`` marks a value never reached."""

    lr: float
    seed: int
    epochs: int
    val_loss_curve: list[float | None]  # epoch 0 (before training) .. epochs
    val_loss: float | None  # the last entry of the curve
    test_loss: float | None = None
    test_accuracy: float | None = None
    wall_s: float = 0.0
    epoch_wall_s: list[float] = field(default_factory=list)  # cumulative training seconds per epoch
    diverged: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Initial weights come from the process-global RNGs. Runs trained at once in several threads of
# one process (batched lanes) take this lock around seeding and drawing, so every model still
# starts from its seed's weights.
GLOBAL_RNG_LOCK = threading.Lock()


def initial_model(workload: Workload, seed: int) -> nn.Module:
    """``workload.build_model()`` right after ``seed_everything(seed)``: the weights every run
    with ``seed`` starts from, whichever arm trains it."""
    with GLOBAL_RNG_LOCK:
        seed_everything(seed)
        return workload.build_model()


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> tuple[float, float]:
    """(mean loss, accuracy) over all of ``x`` in one forward pass."""
    logits = model(x)
    return float(loss_fn(logits, y)), float((logits.argmax(dim=1) == y).float().mean())


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def train_run(
    workload: Workload,
    arm: Arm,
    lr: float,
    *,
    epochs: int,
    seed: int,
    evaluate_test: bool = True,
    on_epoch: Callable[[int, float], None] | None = None,
) -> RunResult:
    """Train a fresh model for ``epochs`` epochs; validation loss after every epoch.

    The seed fixes the initial weights (torch's global RNG) and the batch order (a private
    generator), so runs of different arms with the same seed are paired. A non-finite loss or
    gradient ends the run early as ``diverged``.
    """
    data = workload.data
    model = initial_model(workload, seed)
    optimizer = arm.build(model.parameters(), lr)
    batch_order = torch.Generator().manual_seed(seed)
    loss_fn, batch_size, n = workload.loss_fn, workload.batch_size, len(data.x_train)

    val_loss, _ = evaluate(model, loss_fn, data.x_val, data.y_val)
    curve: list[float | None] = [_finite(val_loss)]
    epoch_wall: list[float] = []
    diverged = False
    step = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=batch_order)
        x_epoch, y_epoch = data.x_train[order], data.y_train[order]
        try:
            for i in range(0, n, batch_size):
                logits = model(x_epoch[i : i + batch_size])
                loss = loss_fn(logits, y_epoch[i : i + batch_size])
                if isinstance(optimizer, HessianLRAdaptation):
                    # Its estimator may sample curvature in the backward (hutchinson, gauss-newton).
                    optimizer.backward(loss, logits=logits)
                else:
                    # Second-order arms (AdaHessian, SophiaH) take a Hessian-vector product from
                    # p.grad inside step(): on those steps the backward keeps its graph.
                    loss.backward(create_graph=arm.needs_graph(step))
                optimizer.step()
                # Frees the gradients, and with them any graph they hold (p -> p.grad -> graph -> p
                # is a reference cycle that would otherwise outlive the step).
                optimizer.zero_grad(set_to_none=True)
                step += 1
        except FloatingPointError:  # the wrapper refuses non-finite gradients
            diverged = True
        model.eval()
        val_loss, _ = evaluate(model, loss_fn, data.x_val, data.y_val)
        epoch_wall.append(time.perf_counter() - start)
        if diverged or not math.isfinite(val_loss):
            diverged = True
            curve.append(None)
            break
        curve.append(val_loss)
        if on_epoch is not None:
            on_epoch(epoch, val_loss)
    wall = time.perf_counter() - start

    result = RunResult(lr=lr, seed=seed, epochs=epochs, val_loss_curve=curve, val_loss=curve[-1],
                       wall_s=wall, epoch_wall_s=epoch_wall, diverged=diverged)
    if evaluate_test and not diverged:
        test_loss, test_acc = evaluate(model, loss_fn, data.x_test, data.y_test)
        result.test_loss, result.test_accuracy = _finite(test_loss), test_acc
    return result
