"""K models of one workload trained at once, each by the arm's own optimizer.

Parameters live in one flat buffer laid out parameter-major: for every parameter of the model a
contiguous ``[K, *shape]`` block (``self.params[i]``), so that row ``k`` of every block is model
``k``. Two things are independent:

**Gradients** (one of two paths):

* the generic path — one batched forward for all K models (:mod:`~hessian_lr.training.forward`:
  ``torch.func.vmap`` over ``torch.func.functional_call``, or a specialised forward for the
  model's class), the per-model losses summed and handed to the arm's backward (the sum's
  gradient with respect to model k's parameters is model k's own gradient); any workload model
  without changing buffers, any arm whose step ``stacks``;
* :class:`~hessian_lr.training.mlp.BatchedMLP` — a hand-written batched forward/backward for
  ReLU MLPs under cross-entropy (faster than the generic path on mnist1d-mlp: ``docs/engine.md``,
  ``benchmarks/batched_training.py``), used when the arm's backward is a plain one.

**Optimizers** — always the arm's own ``torch.optim.Optimizer``, built by ``arm.build`` with each
model's hyperparameters. Runs whose hyperparameters differ only in the lr form a group (their
rows are made contiguous). A group whose optimizer passes the stacking probe
(:mod:`~hessian_lr.training.stacking`: row-separable, linear in the lr) gets ONE optimizer over
its stacked ``[k, *shape]`` views, stepped at the group's largest lr, and each row's change is
then scaled by ``lr_row / lr_largest``; any other group gets one optimizer per model, over
``[*shape]`` views of its rows (Muon, SOAP, Shampoo, Kron: nothing mixes statistics across
models). Either way the optimizer's views write straight into the flat buffer.

Divergence: before every optimizer step the gradients are checked per row (one reduction in the
common case). A row with inf/NaN is stopped for the rest of the epoch — its gradient and its
parameters are zeroed, its optimizer does not see it (a per-model optimizer skips its step; a
stacked one sees zeros, and the row is restored to zeros after the step) — so nothing non-finite
reaches another row. At the end of the epoch the skeleton drops it; the flat buffers shrink and
stacked optimizers have their state sliced (:func:`~hessian_lr.training.stacking.compact_optimizer`,
which the probe checks; an optimizer that cannot be sliced keeps the dead row, zeroed).

Agreement with one-at-a-time training is to float tolerance, not bitwise: batched GEMMs round
differently from per-model ``addmm``, and a per-row lr is applied as a scaled change. At chaotic
learning rates a one-ulp difference grows like any perturbation (``docs/engine.md``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from hessian_lr.arms import Arm
from hessian_lr.training import conv as _conv  # noqa: F401  (registers the Mnist1dCNN batched forward)
from hessian_lr.training.forward import batched_forward
from hessian_lr.training.mlp import BatchedMLP
from hessian_lr.training.records import GLOBAL_RNG_LOCK, ModelRNG, Run
from hessian_lr.training.stacking import LR, compact_optimizer, drop_parameters, hyperparameter_key, stacking_of
from hessian_lr.workloads import Workload

__all__ = ["StackedModels", "generic_path_supports", "hand_written_path_serves", "model_structure"]


@functools.lru_cache(maxsize=None)
def model_structure(workload: Workload) -> nn.Module:
    """A throwaway model of ``workload`` (its structure only), built without touching torch's
    global RNG."""
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        return workload.build_model()


def hand_written_path_serves(workload: Workload, arm: Arm) -> bool:
    """Whether the gradients of ``arm`` on ``workload`` come from the hand-written batched MLP
    backward (:class:`~hessian_lr.training.mlp.BatchedMLP`)."""
    return arm.step.plain and BatchedMLP.supports(model_structure(workload), workload.loss_fn,
                                                   l2=float(getattr(workload, "l2", 0.0)))


def generic_path_supports(model: nn.Module) -> bool:
    """The generic path needs a model without running statistics (BatchNorm buffers) or dropout."""
    if any(True for _ in model.buffers()):
        return False
    return not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


STACKED, POOLED, MODEL = "stacked", "pooled", "model"


@dataclass
class _Unit:
    """One optimizer and the rows ``start .. stop-1`` it updates.

    ``kind`` says how its parameters are laid out: ``stacked`` — one ``[rows, *shape]`` view per
    model parameter; ``pooled`` — every row's ``[*shape]`` views, row after row; ``model`` — one
    row's ``[*shape]`` views (an optimizer of its own)."""

    optimizer: Optimizer
    leaves: list[Tensor]
    start: int
    stop: int
    kind: str
    hyperparameters: dict[str, Any]
    lr_scale: Tensor | None = None  # per-row lr / the lr the optimizer steps at (stacked, pooled)
    rng: ModelRNG | None = None  # its model's own global-RNG stream (model units only)

    @property
    def rows(self) -> range:
        return range(self.start, self.stop)

    def row_leaves(self, position: int, count: int) -> list[Tensor]:
        """The ``count`` leaves of the unit's ``position``-th row (pooled and model units)."""
        return self.leaves[position * count : (position + 1) * count]


def _views(flat: Tensor, shapes: Sequence[tuple[int, ...]], rows: int) -> list[Tensor]:
    """``[rows, *shape]`` views of consecutive blocks of ``flat``."""
    views, offset = [], 0
    for shape in shapes:
        size = rows * math.prod(shape)
        views.append(flat[offset : offset + size].view(rows, *shape))
        offset += size
    return views


class StackedModels:
    """A :class:`~hessian_lr.training.records.ModelSet` of K stacked models (see the module docstring).

    Args:
        workload: the workload (its model, loss, L2 penalty).
        arm: the arm; its step must stack (``arm.step.stacks``).
        runs: one per model, in row order; initial weights from each run's seed. Consecutive
            runs whose hyperparameters differ only in the lr share an optimizer where that is
            the same training (:func:`~hessian_lr.training.loop.train` orders them so).
        device: where the stacked parameters, gradients and optimizer states live (float32).
    """

    def __init__(self, workload: Workload, arm: Arm, runs: Sequence[Run], device: torch.device | str = "cpu") -> None:
        if not arm.step.stacks:
            raise ValueError(f"arm {arm.name!r}: its training step does not stack models")
        self.workload, self.arm = workload, arm
        self.runs = list(runs)
        self.device = torch.device(device)

        initial: dict[int, list[Tensor]] = {}
        # The global RNG stream each seed's model leaves behind: what a per-model optimizer that
        # draws from torch's global RNG (SophiaH's and AdaHessian's Hutchinson probes, Kron's
        # preconditioner updates) starts from when its model trains alone.
        self._rng: dict[int, ModelRNG] = {}
        model = None
        for run in self.runs:
            if run.seed not in initial:
                model, self._rng[run.seed] = ModelRNG.initial(workload, run.seed, self.device)
                initial[run.seed] = [p.detach().to(self.device) for p in model.parameters()]
        assert model is not None
        self.model = model.eval()
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [tuple(p.shape) for p in model.parameters()]
        dtype = next(model.parameters()).dtype
        k = len(self.runs)
        self.flat = torch.empty(k * sum(math.prod(s) for s in self.shapes), dtype=dtype, device=self.device)
        self.params = _views(self.flat, self.shapes, k)
        for i, block in enumerate(self.params):
            torch.stack([initial[run.seed][i] for run in self.runs], out=block)
        self.l2 = float(getattr(workload, "l2", 0.0))

        self.mlp = BatchedMLP(model, self.names) if hand_written_path_serves(workload, arm) else None
        if self.mlp is None and not generic_path_supports(model):
            raise ValueError(f"workload {workload.name!r}: its model has buffers or dropout, which the batched "
                             "engine does not stack")
        self.gflat = torch.zeros_like(self.flat) if self.mlp is not None else None
        self.grads = _views(self.gflat, self.shapes, k) if self.gflat is not None else []
        self.units = self._build_units()
        self._prepare_scaling()
        self.stopped = torch.zeros(k, dtype=torch.bool, device=self.device)
        self._any_stopped = False  # mirrors stopped.any(), read every step without a tensor op
        self.steps = 0
        self._functional = None if self.mlp is not None else self._make_functional()

    # -- construction --------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.runs)

    def _build_units(self) -> list[_Unit]:
        units: list[_Unit] = []
        start = 0
        while start < len(self.runs):
            key = hyperparameter_key(self.runs[start].hyperparameters)
            stop = start + 1
            while stop < len(self.runs) and hyperparameter_key(self.runs[stop].hyperparameters) == key:
                stop += 1
            units += self._group_units(start, stop)
            start = stop
        return units

    def _group_units(self, start: int, stop: int) -> list[_Unit]:
        """One stacked or pooled optimizer for the group's rows where the probe shows that is the
        same training (:mod:`~hessian_lr.training.stacking`), else one optimizer per row."""
        hyperparameters = dict(self.runs[start].hyperparameters)
        lrs = [self.runs[r].lr for r in range(start, stop)]
        if stop - start > 1 and LR in hyperparameters and all(lr is not None and lr > 0 for lr in lrs):
            top = max(lrs)
            one_lr = all(lr == top for lr in lrs)
            stacking = stacking_of(self.arm, {**hyperparameters, LR: top}, self.shapes)
            scale = None if one_lr else torch.tensor([lr / top for lr in lrs], dtype=self.flat.dtype,
                                                     device=self.device)
            kind = STACKED if stacking.stackable else POOLED if (
                stacking.poolable or (one_lr and stacking.poolable_at_one_lr)) else None
            if kind is not None:
                rows: list[int | slice] = [slice(start, stop)] if kind == STACKED else list(range(start, stop))
                leaves = [self._leaf(block[r], grad) for r in rows
                          for block, grad in zip(self.params, self._grad_views(r))]
                optimizer = self.arm.build(leaves, **{**hyperparameters, LR: top})
                return [_Unit(optimizer, leaves, start, stop, kind, {**hyperparameters, LR: top}, scale)]
        units = []
        for row in range(start, stop):
            leaves = [self._leaf(block[row], grad) for block, grad in zip(self.params, self._grad_views(row))]
            unit = _Unit(None, leaves, row, row + 1, MODEL, dict(self.runs[row].hyperparameters),  # type: ignore[arg-type]
                         rng=self._rng[self.runs[row].seed].copy())
            with unit.rng.active():
                unit.optimizer = self.arm.build(leaves, **self.runs[row].hyperparameters)
            units.append(unit)
        return units

    def _grad_views(self, rows: int | slice) -> list[Tensor | None]:
        """The gradient buffer's views of ``rows`` per parameter (hand-written path), else Nones."""
        return [g[rows] for g in self.grads] if self.grads else [None] * len(self.shapes)

    @staticmethod
    def _leaf(view: Tensor, grad: Tensor | None) -> Tensor:
        """An optimizer parameter: a view of the flat buffer (a leaf, since the buffer needs no
        grad), with the matching view of the gradient buffer as its ``grad`` on the hand-written
        path (which writes there; the generic path's backward sets ``grad`` itself)."""
        view.requires_grad_(True)
        view.grad = grad
        return view

    def _prepare_scaling(self) -> None:
        """The buffers of the per-row lr scaling (none when no unit needs it)."""
        self._scaled = any(u.lr_scale is not None for u in self.units)
        self._saved = torch.empty_like(self.flat) if self._scaled else None
        self._saved_blocks = _views(self._saved, self.shapes, len(self.runs)) if self._scaled else []
        self._scales = self._row_scales() if self._scaled else []

    def _row_scales(self) -> list[Tensor]:
        """Per parameter block, the rows' lr scales as a ``[K, 1, ...]`` column (1 outside units
        with mixed lrs) that broadcasts over the block: a full-size scale vector would be one
        more model-sized array to stream through the cache every step."""
        scale = torch.ones(len(self.runs), dtype=self.flat.dtype, device=self.device)
        for unit in self.units:
            if unit.lr_scale is not None:
                scale[unit.start : unit.stop] = unit.lr_scale
        return [scale.view(-1, *([1] * len(shape))) for shape in self.shapes]

    def _rescale_changes(self) -> None:
        """Row k's parameter change since ``_saved`` times its lr scale: θ = saved + s (θ - saved)."""
        for block, saved, scale in zip(self.params, self._saved_blocks, self._scales):
            torch.lerp(saved, block, scale, out=block)

    def _make_functional(self) -> dict[str, Any]:
        from torch.func import vmap

        forward, loss_fn = batched_forward(self.model), self.workload.loss_fn
        return {"shared": forward.shared, "own": forward.own, "loss": vmap(loss_fn),
                "loss_shared": vmap(loss_fn, in_dims=(0, None))}

    # -- mode switches -------------------------------------------------------------------------
    def train_mode(self) -> None:
        for unit in self.units:
            self.arm.step.train(unit.optimizer)

    def eval_mode(self) -> None:
        for unit in self.units:
            self.arm.step.eval(unit.optimizer)

    # -- one step ------------------------------------------------------------------------------
    def _stacked_leaves(self) -> list[Tensor]:
        """Per parameter, the K rows as one differentiable tensor made of the units' leaves."""
        n = len(self.shapes)
        if len(self.units) == 1 and self.units[0].kind == STACKED:
            return self.units[0].leaves

        def rows_of(unit: _Unit, i: int) -> Tensor:
            if unit.kind == STACKED:
                return unit.leaves[i]
            return torch.stack([unit.leaves[j * n + i] for j in range(unit.stop - unit.start)])

        return [torch.cat([rows_of(u, i) for u in self.units]) if len(self.units) > 1 else rows_of(self.units[0], i)
                for i in range(n)]

    def _gradients(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """Compute every model's gradient; returns the ``[K, *shape]`` gradient tensors by
        parameter when they are stacked in one place (the hand-written path), else []."""
        if self.mlp is not None:
            self.mlp.grad_(self.params, self.grads, x, y)
            return self.grads
        stacked = self._stacked_leaves()
        params = dict(zip(self.names, stacked))
        outputs = self._functional["own"](params, x)
        # The sum of the K models' mean losses. Every model has the same rows, and a workload's
        # loss is a mean over its rows, so that is K times the loss of all K·B rows at once: one
        # call instead of a vmapped one (7x faster for cross-entropy here).
        loss = self.workload.loss_fn(outputs.flatten(0, 1), y.flatten(0, 1)) * len(self.runs)
        if self.l2:
            loss = loss + self.workload.penalty(stacked)
        self.arm.step.backward(self.units[0].optimizer, loss, logits=outputs, step=self.steps)
        return []

    def _unit_grads(self, unit: _Unit) -> list[Tensor | None]:
        return [leaf.grad for leaf in unit.leaves]

    def _nonfinite_rows(self, stacked_grads: list[Tensor]) -> Tensor | None:
        """Rows whose gradient holds inf/NaN (None when there are none). One reduction over all
        gradients first; a huge finite sum can overflow, so the rows are then checked exactly."""
        k = len(self.runs)
        if stacked_grads:
            if bool(self.gflat.sum().isfinite()):
                return None
            bad = torch.zeros(k, dtype=torch.bool, device=self.device)
            for g in stacked_grads:
                bad |= ~g.reshape(k, -1).isfinite().all(dim=1)
            return bad if bool(bad.any()) else None
        grads = [g for unit in self.units for g in self._unit_grads(unit) if g is not None]
        if grads and bool(torch.stack([g.sum() for g in grads]).sum().isfinite()):
            return None
        bad = torch.zeros(k, dtype=torch.bool, device=self.device)
        n = len(self.shapes)
        for unit in self.units:
            for j, g in enumerate(self._unit_grads(unit)):
                if g is None:
                    continue
                if unit.kind == STACKED:
                    bad[unit.start : unit.stop] |= ~g.reshape(unit.stop - unit.start, -1).isfinite().all(dim=1)
                else:  # pooled / model: the j-th leaf belongs to the unit's (j // n)-th row
                    bad[unit.start + j // n] |= ~g.isfinite().all()
        return bad if bool(bad.any()) else None

    def _zero_rows(self, rows: Tensor) -> None:
        """Zero the parameters and gradients of ``rows`` (a bool mask)."""
        with torch.no_grad():
            for block in self.params:
                block[rows] = 0.0
            n = len(self.shapes)
            for unit in self.units:
                local = rows[unit.start : unit.stop]
                if unit.kind == STACKED:
                    for g in self._unit_grads(unit):
                        if g is not None:
                            g[local] = 0.0
                elif unit.kind == POOLED:  # one optimizer steps every row: the stopped rows see zeros
                    for position in torch.nonzero(local).flatten().tolist():
                        for leaf in unit.row_leaves(position, n):
                            if leaf.grad is not None:
                                leaf.grad.zero_()

    def step(self, x: Tensor, y: Tensor) -> Tensor | None:
        stacked_grads = self._gradients(x, y)
        newly = self._nonfinite_rows(stacked_grads)
        if newly is not None:
            newly &= ~self.stopped
            self.stopped |= newly
            self._any_stopped = bool(self.stopped.any())
        if self._any_stopped:
            self._zero_rows(self.stopped)
        with torch.no_grad():
            if self._scaled:
                self._saved.copy_(self.flat)
            for unit in self.units:
                if unit.kind != MODEL or not (self._any_stopped and bool(self.stopped[unit.start])):
                    if unit.rng is None:
                        unit.optimizer.step()
                    else:
                        with unit.rng.active():
                            unit.optimizer.step()
            if self._scaled:
                self._rescale_changes()
            if self._any_stopped:
                for block in self.params:
                    block[self.stopped] = 0.0
        if self.mlp is None:
            for unit in self.units:  # frees the graph a create_graph backward leaves in p.grad
                unit.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return newly if newly is not None and bool(newly.any()) else None

    def resume(self) -> None:
        self.stopped.zero_()
        self._any_stopped = False

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, accuracy: bool) -> tuple[Tensor, Tensor | None]:
        k = len(self.runs)
        if self.mlp is not None:
            loss, acc = self.mlp.loss_and_accuracy(self.params, x.expand(k, *x.shape), y, accuracy=accuracy)
        else:
            params = dict(zip(self.names, self.params))
            outputs = self._functional["shared"](params, x)
            loss = self._functional["loss_shared"](outputs, y)
            acc = (outputs.argmax(dim=-1) == y).float().mean(dim=1) if accuracy else None
        return loss, acc

    # -- dropping models -----------------------------------------------------------------------
    def keep(self, positions: Sequence[int]) -> None:
        """Drop every row but ``positions``: the flat buffers shrink, per-model optimizers of
        dropped rows go, stacked and pooled optimizers keep the state of their kept rows."""
        keep = torch.tensor(list(positions), dtype=torch.long, device=self.device)
        kept = set(positions)
        n = len(self.shapes)
        units, new_row = [], 0
        for unit in self.units:
            rows = [r for r in unit.rows if r in kept]
            if not rows:
                continue
            if len(rows) < len(unit.rows):
                local = [r - unit.start for r in rows]
                if unit.kind == STACKED:
                    compact_optimizer(unit.optimizer, unit.leaves, torch.tensor(local, device=self.device))
                elif unit.kind == POOLED:
                    unit.leaves = [leaf for position in local for leaf in unit.row_leaves(position, n)]
                    unit.optimizer = drop_parameters(unit.optimizer, unit.leaves,
                                                     lambda params, hp=unit.hyperparameters: self.arm.build(params, **hp))
                unit.lr_scale = None if unit.lr_scale is None else unit.lr_scale[torch.tensor(local, device=self.device)]
            unit.start, unit.stop = new_row, new_row + len(rows)
            new_row = unit.stop
            units.append(unit)
        k = len(positions)
        flat = torch.cat([block[keep].reshape(-1) for block in self.params]) if k else self.flat[:0].clone()
        self.flat, self.params = flat, _views(flat, self.shapes, k)
        if self.gflat is not None:
            self.gflat = torch.zeros_like(flat)
            self.grads = _views(self.gflat, self.shapes, k)
        with torch.no_grad():
            for unit in units:
                rows: list[int | slice] = [slice(unit.start, unit.stop)] if unit.kind == STACKED else list(unit.rows)
                views = [(block[r], grad) for r in rows for block, grad in zip(self.params, self._grad_views(r))]
                for leaf, (view, grad) in zip(unit.leaves, views):
                    leaf.data = view
                    leaf.grad = grad
        self.units = units
        self.runs = [self.runs[p] for p in positions]
        self._prepare_scaling()
        self.stopped = torch.zeros(k, dtype=torch.bool, device=self.device)
        self._any_stopped = False
