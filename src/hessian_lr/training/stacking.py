"""When may one optimizer update K models at once? A probe, and the per-row learning rate.

The training engine can hand an arm's optimizer the K models' parameters *stacked*
(``[K, *shape]`` tensors, one optimizer step for all of them) instead of one optimizer per
model. That is the same training only if the optimizer's update

1. is **row-separable**: row ``k`` of the update depends on row ``k`` of the gradients and state
   alone (true of elementwise rules — Adam, AdaBelief, Lion, HessianLRAdaptation's gradient-only
   estimators — and false of whole-tensor ones: Muon's orthogonalisation, SOAP's and Shampoo's
   preconditioners, Kron, per-tensor norms or trust ratios, random probes), and
2. is **linear in the learning rate** with the state independent of it (``Δθ = lr · u(g, state)``,
   weight decay included), so that a per-row lr is applied by scaling each row's parameter change
   ``lr_k / lr_ref`` after a step taken at ``lr_ref`` (false of Prodigy's and schedule-free
   optimizers' lr-dependent state).

:func:`stacking_of` finds out by running the arm's optimizer both ways on random data shaped
like the model — three rows, gradient scales four decades apart, different lrs, a few steps,
then dropping the middle row (:func:`compact_optimizer`) and stepping again — and comparing the
parameters to a tolerance. Nothing is declared per optimizer class, so an optimizer the engine
has never seen is classified by what it does. The probe sees twelve steps of a noisy quadratic:
an optimizer whose coupling across parameters can stay hidden that long (Prodigy's global
step-size estimate grows from 1e-6 and couples the rows only once it moves) must state
``Arm.stackable = False``, as the built-in ``prodigy`` arm does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from hessian_lr.arms import Arm

__all__ = ["Stacking", "stacking_of", "compact_optimizer", "hyperparameter_key", "LR"]

LR = "lr"
PROBE_ROWS = 3
PROBE_STEPS = 8
AFTER_COMPACTION_STEPS = 4
ROW_CURVATURES = (1.0, 10.0, 0.1)
LR_FACTORS = (1.0, 0.31, 0.047)  # the reference row and two smaller lrs
RTOL = 1e-9  # of each row's own parameter change (the probe runs in float64)
ATOL = 1e-13  # times the parameters' magnitude: float64 rounding of the two ways


@dataclass(frozen=True)
class Stacking:
    """What the probe found: ``stackable`` (one optimizer may update stacked rows with per-row
    lrs) and ``compactable`` (rows can be dropped from it mid-training by slicing its state)."""

    stackable: bool
    compactable: bool
    reason: str = ""


def hyperparameter_key(hyperparameters: Mapping[str, Any]) -> tuple:
    """A hashable key of everything but the lr: runs with equal keys may share one optimizer."""
    return tuple(sorted((k, repr(v)) for k, v in hyperparameters.items() if k != LR))


def _slice_rows(value: Any, keep: Tensor, rows: int, shapes: set[tuple[int, ...]]) -> Any:
    if isinstance(value, Tensor):
        if value.dim() and value.shape[0] == rows and tuple(value.shape) in shapes:
            return value[keep].clone()
        return value
    if isinstance(value, dict):
        return {k: _slice_rows(v, keep, rows, shapes) for k, v in value.items()}
    if isinstance(value, list):
        return [_slice_rows(v, keep, rows, shapes) for v in value]
    return value


def compact_optimizer(optimizer: Optimizer, leaves: Sequence[Tensor], keep: Tensor) -> None:
    """Keep only rows ``keep`` of stacked parameters ``leaves`` and of ``optimizer``'s state.

    Every state tensor shaped like one of the stacked parameters (``[K, *shape]``) is sliced;
    the rest (step counters, scalars) is kept. The leaves stay the same objects (the optimizer's
    references and its parameter groups are untouched); their data become the kept rows.
    Whether this is right for an optimizer is what the probe checks.
    """
    rows = leaves[0].shape[0]
    shapes = {tuple(leaf.shape) for leaf in leaves}
    state = _slice_rows(optimizer.state_dict(), keep, rows, shapes)
    with torch.no_grad():
        for leaf in leaves:
            leaf.data = leaf.data[keep].clone()
            leaf.grad = None
    optimizer.load_state_dict(state)


class _ProbeGradient:
    """Gradients of a noisy quadratic per row, ``g = c_row · (θ − θ*) + noise``, taken at each
    run's own current parameters. Descending a loss (rather than following random gradients)
    makes optimizers with global, adaptive state (Prodigy's step-size estimate) move it, so a
    coupling across rows shows within a few steps; the curvatures ``c_row`` are decades apart,
    which exposes per-tensor norms and trust ratios."""

    def __init__(self, shapes: Sequence[tuple[int, ...]], generator: torch.Generator) -> None:
        self.targets = [torch.randn(PROBE_ROWS, *s, generator=generator, dtype=torch.float64) for s in shapes]
        self.generator = generator
        self.noise: list[Tensor] = []
        self.new_step()

    def new_step(self) -> None:
        self.noise = [0.1 * torch.randn(t.shape, generator=self.generator, dtype=t.dtype) for t in self.targets]

    def __call__(self, tensor: int, rows: list[int], params: Tensor) -> Tensor:
        curvature = torch.tensor([ROW_CURVATURES[r] for r in rows], dtype=params.dtype)
        curvature = curvature.view(-1, *([1] * (params.dim() - 1)))
        return curvature * (params - self.targets[tensor][rows]) + self.noise[tensor][rows]


class _PerRow:
    """The reference: one optimizer per row, each at its own lr."""

    def __init__(self, arm: Arm, hyperparameters: Mapping[str, Any], init: list[Tensor], lrs: Sequence[float]) -> None:
        self.leaves = [[t[row].clone().requires_grad_(True) for t in init] for row in range(len(lrs))]
        self.optimizers = [arm.build(leaves, **{**hyperparameters, LR: lr}) for leaves, lr in zip(self.leaves, lrs)]

    def step(self, gradient: _ProbeGradient) -> None:
        for row, (leaves, optimizer) in enumerate(zip(self.leaves, self.optimizers)):
            for i, leaf in enumerate(leaves):
                leaf.grad = gradient(i, [row], leaf.detach().unsqueeze(0))[0]
            optimizer.step()


class _Stacked:
    """One optimizer over all rows at the reference lr; each row's change scaled by its factor."""

    def __init__(self, arm: Arm, hyperparameters: Mapping[str, Any], init: list[Tensor], factors: Sequence[float]) -> None:
        self.leaves = [t.clone().requires_grad_(True) for t in init]
        self.optimizer = arm.build(self.leaves, **hyperparameters)
        self.factors = list(factors)
        self.rows = list(range(len(factors)))

    def keep(self, rows: list[int]) -> None:
        compact_optimizer(self.optimizer, self.leaves, torch.tensor([self.rows.index(r) for r in rows]))
        self.rows = rows

    def step(self, gradient: _ProbeGradient) -> None:
        scale = torch.tensor([self.factors[r] for r in self.rows], dtype=self.leaves[0].dtype)
        saved = [leaf.detach().clone() for leaf in self.leaves]
        for i, leaf in enumerate(self.leaves):
            leaf.grad = gradient(i, self.rows, leaf.detach())
        self.optimizer.step()
        with torch.no_grad():
            for leaf, before in zip(self.leaves, saved):
                leaf.sub_(before).mul_(scale.view(-1, *([1] * (leaf.dim() - 1)))).add_(before)


def _max_abs(a: Tensor) -> float:
    return float(a.abs().max()) if a.numel() else 0.0


def _mismatch(stacked: _Stacked, reference: _PerRow, init: list[Tensor]) -> str | None:
    """Why the stacked rows differ from the per-row reference (None: they agree to RTOL of each
    row's own parameter change, plus float64 rounding at the parameters' scale)."""
    for position, row in enumerate(stacked.rows):
        for i, (got, want) in enumerate(zip(stacked.leaves, reference.leaves[row])):
            want = want.detach()
            change = _max_abs(want - init[i][row])
            error = _max_abs(got.detach()[position] - want)
            if not error <= RTOL * change + ATOL * _max_abs(want):
                return f"row {row}, tensor {i}: differs by {error:.3g} (its change {change:.3g})"
    return None


def _run_probe(arm: Arm, hyperparameters: Mapping[str, Any], shapes: Sequence[tuple[int, ...]]) -> Stacking:
    """Both ways in lockstep on float64 data; stops at the first step where they differ."""
    generator = torch.Generator().manual_seed(20241)
    dtype = torch.float64  # rounding far below any real difference between the two ways
    init = [torch.randn(PROBE_ROWS, *s, generator=generator, dtype=dtype) for s in shapes]
    lr_ref = float(hyperparameters[LR])
    reference = _PerRow(arm, hyperparameters, init, [lr_ref * f for f in LR_FACTORS])
    stacked = _Stacked(arm, hyperparameters, init, LR_FACTORS)
    compactable = True
    gradient = _ProbeGradient(shapes, generator)
    for t in range(PROBE_STEPS + AFTER_COMPACTION_STEPS):
        if t == PROBE_STEPS:
            try:
                stacked.keep([0, 2])
            except Exception:  # noqa: BLE001 - its state cannot be sliced by row
                compactable = False
                break
        gradient.new_step()
        reference.step(gradient)
        stacked.step(gradient)
        why = _mismatch(stacked, reference, init)
        if why is not None:
            return Stacking(False, False, why)
    return Stacking(True, compactable, "" if compactable else "its state cannot be sliced by row")


_CACHE: dict[tuple, Stacking] = {}


def stacking_of(arm: Arm, hyperparameters: Mapping[str, Any], shapes: Sequence[tuple[int, ...]]) -> Stacking:
    """Whether ``arm``'s optimizer, built with ``hyperparameters``, may update stacked rows of
    parameters shaped ``shapes`` (see the module docstring). Cached per arm, non-lr
    hyperparameters (the lr included: a coupling through an lr-dependent state may show at one lr
    and not at another) and shapes; torch's global RNG is left as it was.

    ``Arm.stackable`` overrides the probe (True: stackable and compactable; False: neither). An
    arm whose step needs a graph or per-model logits is never stacked here: the probe steps with
    plain gradients.
    """
    if arm.stackable is not None:
        return Stacking(arm.stackable, arm.stackable, "declared by the arm")
    if not arm.step.plain or LR not in hyperparameters:
        return Stacking(False, False, "its step is not a plain backward" if not arm.step.plain else "no lr")
    key = (arm.name, arm.build, tuple(sorted((k, repr(v)) for k, v in hyperparameters.items())),
           tuple(map(tuple, shapes)))
    found = _CACHE.get(key)
    if found is None:
        with torch.random.fork_rng(devices=[]):
            try:
                found = _run_probe(arm, hyperparameters, shapes)
            except Exception as exc:  # noqa: BLE001 - an optimizer that fails on stacked rows is not stackable
                found = Stacking(False, False, f"{type(exc).__name__}: {exc}")
        _CACHE[key] = found
    return found
