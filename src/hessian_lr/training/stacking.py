"""When may one optimizer update K models at once? A probe, and the per-row learning rate.

The training engine gives each of K models the arm's own optimizer. It can do that with ONE
optimizer object in two ways, instead of K:

* **stacked** — the models' parameters stacked into ``[K, *shape]`` tensors, one optimizer step
  for all rows. The same training only if the update is *row-separable* (row ``k`` of the update
  depends on row ``k`` of the gradients and state alone: elementwise rules such as Adam,
  AdaBelief, Lion, HessianLRAdaptation's gradient-only estimators; not whole-tensor ones such as
  Muon's orthogonalisation, SOAP's and Shampoo's preconditioners, Kron, per-tensor norms or trust
  ratios, random probes);
* **pooled** — the K models' parameters as K·n separate tensors of their own shapes in one
  optimizer: the same training if the update treats every tensor on its own (Muon, SOAP, Shampoo)
  — whole-tensor statistics keep their per-model meaning, and the optimizer may batch same-shaped
  tensors of different models itself (Muon's foreach Newton–Schulz does).

Either way rows with different lrs are stepped at the largest lr and each row's parameter change is
scaled by ``lr_k / lr_largest``: right only for an update *linear in the learning rate* with state
independent of it (``Δθ = lr · u(g, state)``, weight decay included; not Prodigy's or
schedule-free optimizers' lr-dependent state, nor Muon's AdamW part, whose lr is its own). Rows
that share one lr need no scaling, so :class:`Stacking` records pooling at one lr separately.

:func:`stacking_of` finds out by running the arm's optimizer each way and one optimizer per row
in lockstep on float64 data shaped like the model (dimensions capped at :data:`PROBE_DIM`): three
rows, each descending a noisy quadratic whose curvature differs by decades between rows, at
three lrs, eight steps, then the middle row is dropped (the optimizer's state cut down to the kept
rows) and four more steps; the parameters must agree to a tolerance. Nothing is declared per
optimizer class, so an optimizer the engine has never seen is classified by what it does. The
probe sees twelve steps: an optimizer whose coupling across parameters can stay hidden that long
(Prodigy's global step-size estimate grows from 1e-6 and couples the rows only once it moves) must
state ``Arm.stackable = False``, as the built-in ``prodigy`` arm does.
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
from hessian_lr.training.records import GLOBAL_RNG_LOCK

__all__ = ["Stacking", "stacking_of", "compact_optimizer", "drop_parameters", "hyperparameter_key", "LR"]

LR = "lr"
PROBE_ROWS = 3
PROBE_STEPS = 8
AFTER_COMPACTION_STEPS = 4
PROBE_DIM = 16  # the probe's tensors: the model's shapes with every dimension capped (cheap, same ranks)
ROW_CURVATURES = (1.0, 10.0, 0.1)
LR_FACTORS = (1.0, 0.31, 0.047)  # the reference row and two smaller lrs
# Agreement, relative to each row's own parameter change. A coupling across rows shows at O(1)
# (the rows' curvatures are decades apart). Stacked elementwise rules agree to float64 rounding.
# Pooled matrix rules agree to the rounding of their own arithmetic, which batching same-shaped
# tensors changes: ~1e-6 for eigendecompositions and matrix roots in float64, ~1e-3 for Muon,
# whose Newton-Schulz iteration runs in bfloat16 whatever the parameters' dtype.
RTOL = 1e-9
POOLED_RTOL = 1e-2
ATOL = 1e-13  # times the parameters' magnitude: float64 rounding of the two ways


@dataclass(frozen=True)
class Stacking:
    """What the probe found (see the module docstring); each way includes dropping rows mid-run.

    ``stackable``: one optimizer over stacked rows, per-row lrs. ``poolable``: one optimizer over
    the rows' separate tensors, per-row lrs. ``poolable_at_one_lr``: the same when all rows share
    one lr (no scaling). ``reason``: why the first way failed."""

    stackable: bool
    poolable: bool = False
    poolable_at_one_lr: bool = False
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


def _renumber(value: Any, index: dict[int, int]) -> Any:
    """A state dict keeping only the parameters in ``index`` (old position -> new position)."""
    if isinstance(value, dict) and "state" in value and "param_groups" in value:
        groups = []
        for group in value["param_groups"]:
            groups.append({**group, "params": [index[i] for i in group["params"] if i in index]})
        state = {index[int(i)]: _renumber(s, index) for i, s in value["state"].items() if int(i) in index}
        return {**{k: _renumber(v, index) for k, v in value.items() if k not in ("state", "param_groups")},
                "state": state, "param_groups": groups}
    if isinstance(value, dict):
        return {k: _renumber(v, index) for k, v in value.items()}
    return value


def drop_parameters(optimizer: Optimizer, keep: Sequence[Tensor], build: Any) -> Optimizer:
    """A new optimizer (``build(keep)``) over the parameters ``keep`` (a subset of ``optimizer``'s,
    in order) that continues exactly where ``optimizer`` was: its state dict with the dropped
    parameters' entries removed and the others renumbered."""
    positions = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    index = {positions[id(p)]: new for new, p in enumerate(keep)}
    state = _renumber(optimizer.state_dict(), index)
    rebuilt = build(list(keep))
    rebuilt.load_state_dict(state)
    return rebuilt


def _max_abs(a: Tensor) -> float:
    return float(a.abs().max()) if a.numel() else 0.0


class _Pooled:
    """One optimizer over every row's tensors as separate parameters, at the reference lr; each
    row's change scaled by its factor. ``keep`` drops rows by rebuilding it over the rest."""

    def __init__(self, arm: Arm, hyperparameters: Mapping[str, Any], init: list[Tensor], factors: Sequence[float]) -> None:
        self.arm, self.hyperparameters = arm, dict(hyperparameters)
        self.rows = list(range(len(factors)))
        self.by_row = {r: [t[r].clone().requires_grad_(True) for t in init] for r in self.rows}
        self.factors = list(factors)
        self.optimizer = arm.build([p for r in self.rows for p in self.by_row[r]], **self.hyperparameters)

    @property
    def leaves(self) -> list[Tensor]:
        """Per tensor, the kept rows stacked (for the comparison)."""
        return [torch.stack([self.by_row[r][i] for r in self.rows]) for i in range(len(self.by_row[0]))]

    def keep(self, rows: list[int]) -> None:
        self.optimizer = drop_parameters(self.optimizer, [p for r in rows for p in self.by_row[r]],
                                         lambda params: self.arm.build(params, **self.hyperparameters))
        self.rows = rows

    def step(self, gradient: _ProbeGradient) -> None:
        saved = {r: [p.detach().clone() for p in self.by_row[r]] for r in self.rows}
        for i in range(len(self.by_row[0])):
            stacked = torch.stack([self.by_row[r][i].detach() for r in self.rows])
            grads = gradient(i, self.rows, stacked)
            for position, r in enumerate(self.rows):
                self.by_row[r][i].grad = grads[position].clone()
        self.optimizer.step()
        with torch.no_grad():
            for r in self.rows:
                for p, before in zip(self.by_row[r], saved[r]):
                    p.sub_(before).mul_(self.factors[r]).add_(before)


def _mismatch(candidate: _Stacked | _Pooled, reference: _PerRow, init: list[Tensor], rtol: float) -> str | None:
    """Why the candidate's rows differ from the per-row reference (None: they agree to ``rtol`` of
    each row's own parameter change, plus float64 rounding at the parameters' scale)."""
    for position, row in enumerate(candidate.rows):
        for i, (got, want) in enumerate(zip(candidate.leaves, reference.leaves[row])):
            want = want.detach()
            change = _max_abs(want - init[i][row])
            error = _max_abs(got.detach()[position] - want)
            if not error <= rtol * change + ATOL * _max_abs(want):
                return f"row {row}, tensor {i}: differs by {error:.3g} (its change {change:.3g})"
    return None


def _agrees(arm: Arm, hyperparameters: Mapping[str, Any], shapes: Sequence[tuple[int, ...]],
            way: type[_Stacked] | type[_Pooled], factors: Sequence[float], rtol: float) -> str | None:
    """Run ``way`` and one optimizer per row in lockstep, dropping the middle row after
    PROBE_STEPS steps; None if they agree throughout, else why not (first difference)."""
    generator = torch.Generator().manual_seed(20241)
    dtype = torch.float64  # rounding far below any real difference between the ways
    init = [torch.randn(PROBE_ROWS, *s, generator=generator, dtype=dtype) for s in shapes]
    lr_ref = float(hyperparameters[LR])
    reference = _PerRow(arm, hyperparameters, init, [lr_ref * f for f in factors])
    candidate = way(arm, hyperparameters, init, factors)
    gradient = _ProbeGradient(shapes, generator)
    for t in range(PROBE_STEPS + AFTER_COMPACTION_STEPS):
        if t == PROBE_STEPS:
            try:
                candidate.keep([0, 2])
            except Exception as exc:  # noqa: BLE001 - its state cannot be cut down to the kept rows
                return f"dropping a row fails: {type(exc).__name__}: {exc}"
        gradient.new_step()
        reference.step(gradient)
        candidate.step(gradient)
        why = _mismatch(candidate, reference, init, rtol)
        if why is not None:
            return why
    return None


def _run_probe(arm: Arm, hyperparameters: Mapping[str, Any], shapes: Sequence[tuple[int, ...]]) -> Stacking:
    shapes = [tuple(min(d, PROBE_DIM) for d in shape) for shape in shapes]
    why = _agrees(arm, hyperparameters, shapes, _Stacked, LR_FACTORS, RTOL)
    if why is None:
        return Stacking(True, True, True)
    if _agrees(arm, hyperparameters, shapes, _Pooled, LR_FACTORS, POOLED_RTOL) is None:
        return Stacking(False, True, True, why)
    at_one_lr = _agrees(arm, hyperparameters, shapes, _Pooled, (1.0,) * PROBE_ROWS, POOLED_RTOL) is None
    return Stacking(False, False, at_one_lr, why)


_CACHE: dict[tuple, Stacking] = {}


def stacking_of(arm: Arm, hyperparameters: Mapping[str, Any], shapes: Sequence[tuple[int, ...]]) -> Stacking:
    """Whether ``arm``'s optimizer, built with ``hyperparameters``, may update stacked rows of
    parameters shaped ``shapes`` (see the module docstring). Cached per arm, non-lr
    hyperparameters (the lr included: a coupling through an lr-dependent state may show at one lr
    and not at another) and shapes; torch's global RNG is left as it was.

    ``Arm.stackable`` overrides the probe (True: every way; False: none). Otherwise an arm whose
    step is not a plain backward is neither stacked nor pooled: the probe steps the optimizer with
    plain gradients, which may not be what that step gives it (a graph for a Hessian-vector
    product, say).
    """
    if LR not in hyperparameters:
        return Stacking(False, reason="no lr")
    if arm.stackable is not None:
        return Stacking(arm.stackable, arm.stackable, arm.stackable, "declared by the arm")
    if not arm.step.plain:
        return Stacking(False, reason="its step is not a plain backward")
    key = (arm.name, arm.build, tuple(sorted((k, repr(v)) for k, v in hyperparameters.items())),
           tuple(map(tuple, shapes)))
    found = _CACHE.get(key)
    if found is None:
        # The probe's optimizers may draw from the global RNG; the lock keeps that, and the
        # restore at the end, away from a lane drawing its models' weights meanwhile.
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            try:
                found = _run_probe(arm, hyperparameters, shapes)
            except Exception as exc:  # noqa: BLE001 - an optimizer that fails on stacked rows is not stackable
                found = Stacking(False, reason=f"{type(exc).__name__}: {exc}")
        _CACHE[key] = found
    return found
