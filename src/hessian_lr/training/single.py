"""One model and its optimizer, stepped the plain way: the reference the batched engine matches.

Read it top to bottom: ``logits = model(x)``, ``loss = loss_fn(logits, y)`` (+ the workload's
L2 penalty), the arm's backward, ``optimizer.step()``, ``optimizer.zero_grad(set_to_none=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from hessian_lr.arms import Arm
from hessian_lr.training.loop import ModelRNG, Run
from hessian_lr.workloads import Workload

__all__ = ["SingleModel"]


class SingleModel:
    """A :class:`~hessian_lr.training.loop.ModelSet` of one ``nn.Module`` (inputs ``[1, B, ...]``)."""

    size = 1

    def __init__(self, workload: Workload, arm: Arm, run: Run) -> None:
        self.workload, self.arm = workload, arm
        # The model's own stream of the global RNG (its seed, its weights, then what its optimizer
        # draws), swapped in around building and stepping the optimizer: in lanes another thread's
        # model uses the global RNG between two steps of this one.
        self.model, self.rng = ModelRNG.initial(workload, run.seed)
        self.params = list(self.model.parameters())
        with self.rng.active():
            self.optimizer = arm.build(self.params, **run.hyperparameters)
        self.steps = 0
        self.stopped = False
        self.penalty = getattr(workload, "l2", 0.0) != 0.0

    def train_mode(self) -> None:
        self.model.train()
        self.arm.step.train(self.optimizer)

    def eval_mode(self) -> None:
        self.model.eval()
        self.arm.step.eval(self.optimizer)

    def step(self, x: Tensor, y: Tensor) -> Tensor | None:
        if self.stopped:
            return None
        logits = self.model(x[0])
        loss = self.workload.loss_fn(logits, y[0])
        if self.penalty:
            loss = loss + self.workload.penalty(self.params)
        try:
            self.arm.step.backward(self.optimizer, loss, logits=logits, step=self.steps)
            if self._gradients_finite():
                with self.rng.active():
                    self.optimizer.step()
            else:  # the batched engine's rule: a run with an inf/NaN gradient stops, whatever its optimizer does
                self.stopped = True
        except FloatingPointError:  # HessianLRAdaptation refuses a non-finite gradient
            self.stopped = True
        finally:
            # Frees the gradients, and with them any graph they hold (p -> p.grad -> graph -> p is
            # a reference cycle that would otherwise outlive the step).
            self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return torch.ones(1, dtype=torch.bool) if self.stopped else None

    def _gradients_finite(self) -> bool:
        """Whether every gradient is finite (one reduction; a huge finite sum can overflow, so
        the tensors are then checked one by one)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if math.isfinite(sum(g.sum().item() for g in grads)):  # the cheapest form measured (~9 us here)
            return True
        return all(bool(g.isfinite().all()) for g in grads)

    def resume(self) -> None:
        self.stopped = False

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, accuracy: bool) -> tuple[Tensor, Tensor | None]:
        outputs = self.model(x)
        loss = self.workload.loss_fn(outputs, y).reshape(1)
        return loss, (outputs.argmax(dim=-1) == y).float().mean().reshape(1) if accuracy else None

    def keep(self, positions: Sequence[int]) -> None:
        if not positions:  # the run ended; nothing else to free
            self.optimizer.zero_grad(set_to_none=True)
