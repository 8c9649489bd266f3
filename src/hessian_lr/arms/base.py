"""An arm: an optimizer under test, with the training step it needs and its search space.

AlgoPerf splits a benchmark into *workloads* (data, model, loss, target) and *submissions*
(Dahl et al. 2023, "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179); a
submission owns its whole update. Here an :class:`Arm` is a submission reduced to what differs
between optimizers:

* ``build(params, **hyperparameters)`` makes the optimizer (a ``torch.optim.Optimizer``);
* ``step`` (a :class:`TrainStep`) owns the parts of the training step that are not
  ``loss.backward(); optimizer.step()``: a backward that keeps its graph (AdaHessian, SophiaH),
  ``optimizer.backward(loss, logits=...)`` (HessianLRAdaptation's sampling estimators), the
  ``train()`` / ``eval()`` switch of schedule-free optimizers around evaluation;
* ``space`` is the arm's default search space (:mod:`hessian_lr.tuning.space`);
* ``defaults`` are the values of the constructor arguments the arm does not set itself (the
  optimizer's own defaults, or the arm's choice, e.g. SGD's momentum 0.9): they fill tuple
  items (``betas[1]``) and tell the ``wide`` preset which hyperparameters exist.

No training loop asks what kind of optimizer it holds: it calls the arm's step. A wrapped arm
(:mod:`hessian_lr.arms.wrapping`) records what it wraps (:class:`Wrapping`) and keeps its base's
step, or composes a sampling estimator's backward with it (:class:`SampledStep`).
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor
from torch.optim import Optimizer

from hessian_lr.tuning.space import DEFAULT_LR, SearchSpace

__all__ = ["Arm", "TrainStep", "PlainStep", "GraphStep", "EstimatorStep", "SampledStep", "ScheduleFreeStep", "PLAIN",
           "DEFAULT_SPACE", "Wrapping", "signature_defaults", "check_space"]

DEFAULT_SPACE = SearchSpace({"lr": DEFAULT_LR})


class TrainStep:
    """The arm-specific parts of one training step (the default: a plain backward).

    The engine calls, per optimizer step: ``backward(optimizer, loss, logits=..., step=...)``,
    then ``optimizer.step()``, then ``optimizer.zero_grad(set_to_none=True)``; and
    ``train(optimizer)`` before each epoch's steps, ``eval(optimizer)`` before evaluating.

    Class attributes tell the engine what it may do:

    * ``plain``: the backward is exactly ``loss.backward()``, so the engine may compute the same
      gradients another way (a hand-written batched backward) and skip ``backward``;
    * ``stacks``: the backward is valid on the *sum* of K independent models' losses in one graph
      (each model's gradient is unaffected by the others), so K models can train in one graph.
      A step that needs per-model information (its own logits, its own sampled curvature) sets
      it False and its models train one at a time.
    """

    plain: ClassVar[bool] = True
    stacks: ClassVar[bool] = True

    def backward(self, optimizer: Optimizer, loss: Tensor, *, logits: Tensor, step: int) -> None:
        """Compute the gradients of ``loss`` into ``p.grad`` for optimizer step ``step`` (0-based)."""
        loss.backward()

    def train(self, optimizer: Optimizer) -> None:
        """Called before the training steps of every epoch."""

    def eval(self, optimizer: Optimizer) -> None:
        """Called before the model is evaluated (validation, test)."""

    def describe(self) -> str:
        return "plain backward"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PlainStep(TrainStep):
    """``loss.backward(); optimizer.step()``: every first-order optimizer."""


PLAIN = PlainStep()


@dataclass(frozen=True, repr=False)
class GraphStep(TrainStep):
    """Second-order optimizers that take a Hessian-vector product from ``p.grad`` inside
    ``step()`` (AdaHessian, SophiaH): on every ``every``-th step (steps 0, every, 2·every, ...)
    the backward keeps its graph (``create_graph=True``). The engine frees the graph after the
    step by setting the gradients to None.

    It does not stack: the optimizer differentiates the graph inside ``step()``, so K models'
    optimizers cannot share one graph (the first step frees it, and writes the parameter buffer
    whose views the others' graphs saved); its models train one at a time."""

    every: int = 1
    plain: ClassVar[bool] = False
    stacks: ClassVar[bool] = False

    def needs_graph(self, step: int) -> bool:
        return step % self.every == 0

    def backward(self, optimizer: Optimizer, loss: Tensor, *, logits: Tensor, step: int) -> None:
        loss.backward(create_graph=self.needs_graph(step))

    def describe(self) -> str:
        return "backward with create_graph=True" + ("" if self.every == 1 else f" every {self.every} steps")

    def __repr__(self) -> str:
        return f"GraphStep(every={self.every})"


class EstimatorStep(TrainStep):
    """HessianLRAdaptation with an estimator that samples curvature in the backward
    (``hutchinson``, ``gauss-newton``): ``optimizer.backward(loss, logits=logits)``. It needs the
    model's own logits, so it does not stack models."""

    plain: ClassVar[bool] = False
    stacks: ClassVar[bool] = False

    def backward(self, optimizer: Optimizer, loss: Tensor, *, logits: Tensor, step: int) -> None:
        optimizer.backward(loss, logits=logits)  # type: ignore[attr-defined]

    def describe(self) -> str:
        return "optimizer.backward(loss, logits=logits)"


@dataclass(frozen=True, repr=False)
class SampledStep(EstimatorStep):
    """A sampling estimator's backward around a base step of its own: the backward is the
    estimator's (``optimizer.backward(loss, logits=logits)``), ``train`` / ``eval`` are the base
    step's (the wrapper forwards ``optimizer.train()`` / ``eval()`` to its base optimizer). Only a
    base step whose backward is a plain ``loss.backward()`` composes so: the estimator's backward
    computes the same gradients and adds its sample."""

    around: TrainStep = PLAIN

    def train(self, optimizer: Optimizer) -> None:
        self.around.train(optimizer)

    def eval(self, optimizer: Optimizer) -> None:
        self.around.eval(optimizer)

    def describe(self) -> str:
        return f"{super().describe()}; the base's {self.around.describe()}"

    def __repr__(self) -> str:
        return f"SampledStep(around={self.around!r})"


class ScheduleFreeStep(TrainStep):
    """Schedule-free optimizers (Defazio et al. 2024, arXiv:2405.15682) train at one point and
    are evaluated at another: ``optimizer.train()`` before training, ``optimizer.eval()`` before
    evaluation."""

    def train(self, optimizer: Optimizer) -> None:
        optimizer.train()  # type: ignore[attr-defined]

    def eval(self, optimizer: Optimizer) -> None:
        optimizer.eval()  # type: ignore[attr-defined]

    def describe(self) -> str:
        return "optimizer.train() before training, optimizer.eval() before evaluation"


def signature_defaults(fn: Callable[..., Any], skip: int = 1) -> dict[str, Any]:
    """The keyword arguments of ``fn`` that have defaults (after the first ``skip`` positional
    parameters, i.e. ``params``); ``**kwargs`` and parameters without a default are left out."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters
            if p.default is not inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


@dataclass(frozen=True)
class Arm:
    """An optimizer under test.

    Args:
        name: how the CLI, results.json and the report call it.
        build: ``build(params: list[Tensor], **hyperparameters) -> Optimizer``.
        description: one line for the report (class, what is fixed).
        space: the default search space (lr log-uniform in [1e-4, 1e-1] unless the arm says).
        defaults: constructor defaults the space may refer to (see the module docstring).
        step: the arm's :class:`TrainStep`.
        requires: importable packages ``build`` needs (checked before training; their versions
            go into results.json).
        source: where the arm is defined (a module, or the import path a user gave).
        relative_cost: training-step time relative to Adam; schedules the slowest arms first.
        stackable: whether one optimizer may update K models' parameters stacked into
            ``[K, ...]`` tensors (an elementwise update, linear in the lr). ``None``: the
            training engine finds out by a probe (:mod:`hessian_lr.training.stacking`).
        normalises: whether the optimizer divides each coordinate's step by a running scale of
            its own (Adam's family, sign updates), which largely undoes a per-coordinate
            rescaling of its gradient (:data:`hessian_lr.arms.names.NORMALISES` says why for
            each built-in arm); for a wrapped arm, its base's. ``None``: not classified.
        wraps: for an arm wrapped in HessianLRAdaptation, what it wraps; None otherwise.
    """

    name: str
    build: Callable[..., Optimizer]
    description: str = ""
    space: SearchSpace = DEFAULT_SPACE
    defaults: Mapping[str, Any] = field(default_factory=dict)
    step: TrainStep = PLAIN
    requires: tuple[str, ...] = ()
    source: str = "hessian_lr.arms"
    relative_cost: float = 1.0
    stackable: bool | None = None
    normalises: bool | None = None
    wraps: Wrapping | None = None

    @property
    def available(self) -> bool:
        return all(importlib.util.find_spec(package) is not None for package in self.requires)

    @property
    def second_order(self) -> bool:
        """Whether the arm's backward builds a graph for a Hessian-vector product."""
        return isinstance(self.step, GraphStep)

    def missing_requirement(self) -> str | None:
        return next((p for p in self.requires if importlib.util.find_spec(p) is None), None)


@dataclass(frozen=True)
class Wrapping:
    """What a wrapped arm (``hessian-<base>[-<estimator>]`` or an ``[arms.NAME]`` table) is made
    of: its base arm, the estimator's name and the estimator's constructor options."""

    base: Arm
    estimator: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _parameter_names(fn: Callable[..., Any]) -> set[str]:
    """The named parameters of ``fn`` after ``params`` (``**kwargs`` excluded)."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def check_space(arm: Arm, space: SearchSpace, params: list[Tensor]) -> None:
    """Refuse a space that does not fit ``arm`` before any training.

    Every name must be a hyperparameter of the arm (one of its ``defaults``, or a key of the
    built optimizer's ``defaults`` — torch optimizers and pytorch-optimizer's keep every
    constructor hyperparameter there; packages that swallow unknown keyword arguments would
    otherwise ignore a misspelt name silently), and the optimizer must accept both corners of the
    space (:meth:`SearchSpace.corners`). ``params`` are throwaway tensors shaped like the model's.

    Raises:
        ValueError: naming the arm and the offending hyperparameter or value.
    """
    from hessian_lr.tuning.space import assemble_hyperparameters, split_name

    def build(point: dict[str, Any]) -> Optimizer:
        try:
            kwargs = assemble_hyperparameters(point, arm.defaults)
        except ValueError as exc:
            raise ValueError(f"space of {arm.name}: {exc}") from None
        try:
            optimizer = arm.build([p.detach().clone().requires_grad_(True) for p in params], **kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"space of {arm.name}: the optimizer refuses {kwargs}: {' '.join(str(exc).split())}") \
                from None
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"optimizer {arm.name!r}: its factory returned a {type(optimizer).__name__}, not a "
                             "torch.optim.Optimizer")
        return optimizer

    corners = space.corners()
    named = set(arm.defaults) | _parameter_names(arm.build)
    unknown = [name for name in space if split_name(name)[0] not in named]
    if unknown:  # the optimizer's own record of its hyperparameters decides
        known = {name: value for name, value in corners[0].items() if name not in unknown}
        taken = set(getattr(build(known), "defaults", {}))
        for name in unknown:
            if split_name(name)[0] not in taken:
                raise ValueError(f"space of {arm.name}: {name!r} is not a hyperparameter of this optimizer "
                                 f"(it takes {', '.join(sorted(named | taken))})")
    for corner in corners:
        build(corner)
