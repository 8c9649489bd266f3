"""One model and its optimizer, stepped the plain way: the reference the batched engine matches.

Read it top to bottom: ``logits = model(x)``, ``loss = loss_fn(logits, y)`` (+ the workload's
L2 penalty), the arm's backward, ``optimizer.step()``, ``optimizer.zero_grad(set_to_none=True)``.
On a :class:`~hessian_lr.training.placement.Placement` other than the default the model lives on
its device, the forward runs under autocast (bf16, fp16) and, for fp16, the loss is scaled by a
``GradScaler`` whose overflowing steps skip ``optimizer.step()`` (so a wrapped optimizer's state
never counts them); ``--compile`` compiles the model's forward.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hessian_lr.arms import Arm
from hessian_lr.training.placement import Placement
from hessian_lr.training.records import ModelRNG, Run
from hessian_lr.workloads import Workload

__all__ = ["SingleModel", "draws_in_forward"]


def draws_in_forward(model: nn.Module) -> bool:
    """Whether the model's training forward draws random numbers (a dropout module with p > 0)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


class SingleModel:
    """A :class:`~hessian_lr.training.records.ModelSet` of one ``nn.Module`` (inputs ``[1, B, ...]``)."""

    size = 1

    def __init__(self, workload: Workload, arm: Arm, run: Run, placement: Placement | None = None) -> None:
        self.workload, self.arm = workload, arm
        self.placement = placement or Placement()
        device = self.placement.torch_device
        if self.placement.precision == "fp16" and not arm.step.plain:
            raise ValueError(f"arm {arm.name!r}: --precision fp16 scales the loss, which its backward "
                             f"({arm.step.describe()}) does not support; use bf16 or fp32")
        # The model's own stream of the global RNG (its seed, its weights, then what its optimizer
        # and its dropout draw), swapped in around building and stepping the optimizer and around a
        # forward that draws: in lanes another thread's model uses the global RNG between two steps.
        self.model, self.rng = ModelRNG.initial(workload, run.seed, device)
        self.model.to(device)
        self.params = list(self.model.parameters())
        with self.rng.active():
            self.optimizer = arm.build(self.params, **run.hyperparameters)
        self.forward = torch.compile(self.model) if self.placement.compile else self.model
        self._forward_stream = self.rng.active if draws_in_forward(self.model) else contextlib.nullcontext
        self.scaler = self.placement.grad_scaler()
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
        with self._forward_stream(), self.placement.autocast():
            logits = self.forward(x[0])
            loss = self.workload.loss_fn(logits, y[0])
        if self.penalty:
            loss = loss + self.workload.penalty(self.params)
        try:
            if self.scaler is not None:
                self._scaled_step(loss, logits)
            else:
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

    def _scaled_step(self, loss: Tensor, logits: Tensor) -> None:
        """fp16: the scaler's backward and step; an overflow skips ``optimizer.step()`` and lowers
        the scale (the scaler's own rule), so it does not stop the run."""
        assert self.scaler is not None
        self.arm.step.backward(self.optimizer, self.scaler.scale(loss), logits=logits, step=self.steps)
        with self.rng.active():
            self.scaler.step(self.optimizer)
        self.scaler.update()

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
        with self.placement.autocast():
            outputs = self.forward(x)
            loss = self.workload.loss_fn(outputs, y).float().reshape(1)
        return loss, (outputs.argmax(dim=-1) == y).float().mean().reshape(1) if accuracy else None

    def keep(self, positions: Sequence[int]) -> None:
        if not positions:  # the run ended; nothing else to free
            self.optimizer.zero_grad(set_to_none=True)
