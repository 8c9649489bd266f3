"""Train many models of one workload and one arm at once, in one process (``train_batch``).

Every model's parameters are one row of a flat ``[K, P]`` tensor; the optimizer state (Adam's
moments, the grad-diff wrapper's ``prev_grad`` and ``h``, SGD's momentum) is flat ``[K, P]`` too,
so one optimizer step is a handful of elementwise ops over all models, and the learning rate is a
per-model ``[K, 1]`` column. Gradients come from one of two paths:

* ``nn.Sequential`` of ``Linear``/``ReLU`` with cross-entropy (the MLP workloads): a dedicated
  batched forward and a hand-written backward with ``torch.baddbmm``/``torch.bmm`` that writes
  the gradients straight into the flat ``[K, P]`` buffer (no autograd graph, no per-tensor ops);
* anything else without buffers or dropout: ``torch.func.vmap(torch.func.grad(...))`` over
  ``torch.func.functional_call`` on views of the flat rows.

Semantics are those of :func:`hessian_lr.training.loop.train_run`, model by model: for each seed
the same initial weights (``seed_everything(seed)`` then ``workload.build_model()``), the same
batch order (``torch.Generator().manual_seed(seed)``, one ``randperm`` per epoch; models with
different seeds see different batches, gathered into ``[K, n, features]``), the validation loss at
epoch 0 and after every epoch, and divergence per model. A model whose gradient holds inf/NaN
(where the wrapper raises ``FloatingPointError`` and plain Adam would turn its weights into NaN)
is frozen on the spot for the rest of the epoch (its row and its optimizer state are zeroed and
its lr set to 0, so no NaN/inf flows through the batch); it, and any model whose validation loss
is non-finite, gets ``None`` as its last curve entry and leaves the batch at the end of the epoch,
exactly where ``train_run`` would stop. The other models' arithmetic is untouched (every op is
row-wise). ``epoch_wall_s``/``wall_s`` are each
model's amortised share: every epoch's wall time is split evenly among the models trained in it,
so the shares of a batch add up to its wall time.

Agreement with sequential ``train_run`` is to float tolerance, not bitwise: batched GEMMs and the
hand-written backward round differently from autograd's per-model ``addmm``. (The Adam moments and
update use torch's own fused CPU Adam kernel, the one the arms run, on the whole ``[K, P]`` block;
the grad-diff step is the wrapper's op sequence from ``optim/functional.py``.) Measured on
mnist1d-mlp, 10 runs per arm (lr 1e-3 .. 3e-2, seeds 0 and 1), max relative difference of the
validation curve against ``train_run``:

* after 3 epochs: <= 2e-7 for almost every run, adam and hessian-adam alike, at lrs up to 1e-2;
  single runs reached 3e-3 (adam, lr 5e-3) and 4e-2 (hessian-adam, lr 3e-2);
* after 20 epochs: <= 2e-7 to 1.5e-3 at lr 1e-3 .. 2e-3, but 1e-2 .. 1.5e-1 at lr >= 5e-3.
  Training is chaotic there: a one-ulp difference that flips one ReLU or one ``argmax`` grows
  like any perturbation (fused vs foreach torch Adam differ the same way), so batched and
  sequential runs then agree only statistically (final test accuracy within ~1-4 points, either
  direction). Runs that never meet such a flip stay at ~1e-7 for all 20 epochs.

Divergence (huge lrs) is detected at the same epoch as ``train_run``.

Speed, mnist1d-mlp (40-100-100-10, batch 100, 35 steps/epoch), K = 20 models, this 2-core AMD
EPYC shared with other jobs (load average 2-5 while measuring; best of alternating repeats,
``benchmarks/batched_training.py``), milliseconds per model-epoch:

====================  ==========  =======  ========  =====================================
arm, threads          sequential  batched  speed-up  notes
====================  ==========  =======  ========  =====================================
adam, 1 thread        18.5-20.5   8.0-9.0  2.2-2.5x  K = 5 and K = 50 give the same per-model time
hessian-adam, 1       22-28       7.4-9.8  2.5-2.9x  same seed for all K: ~7.4-9
hessian-adam, 2       20.2        5.9      3.4x      quiet moment; under load 2 threads thrash
generic path, 1       (as above)  14.2     ~1.5x     vmap(grad(functional_call)), hessian-adam
adam, 1 (quiet)       9.9         4.2      2.35x     load ~0.7, 2026-11-29
hessian-adam, 1       10.5        4.3      2.46x     same; grad-diff step in the compiled kernel
====================  ==========  =======  ========  =====================================

About 80% of the batched time is the eight batched GEMMs per step, which run at 85-95 GFLOP/s
on one core (the same as one big ``mm`` of equal FLOPs, about this core's peak), so at one
thread ~2.4x is close to what batching can give this model; the rest is the optimizer (~0.12
ms per step for K = 10 with the wrapper, its grad-diff part in the wrapper's compiled kernel
where that is built) and the elementwise forward/backward ops. Two cores are used by training
two batches at once: ``compare`` runs its arms side by side in threads (the GEMMs release the
GIL); two such lanes reach ~1.9x the throughput of one.

Limitations: arms are batched only when their update is an :class:`~hessian_lr.arms.UpdateRule`
(torch Adam/AdamW without amsgrad, SGD, optionally inside ``HessianLRAdaptation`` with the
``grad-diff`` estimator, ``nonfinite="error"`` and float32 state; one param group, float lr, no
scheduler), declared by the arm or read off the optimizer it builds; models with buffers
(BatchNorm) or dropout, and second-order arms, are not batched.
All of those fall back to sequential ``train_run`` calls inside :func:`train_batch`. Memory is
about ``K * P * (5 + 2 for the wrapper)`` floats plus the gathered epoch data ``K * n * features``
(11 MB for K = 20 on mnist1d). ``on_epoch(epoch)`` ticks once per batch epoch (after every active
model was validated), not once per model; in the sequential fallback all ticks come at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hessian_lr.arms import ARMS, UpdateRule, get_arm, update_rule_of
from hessian_lr.optim import kernel as _kernel
from hessian_lr.optim.functional import bias_correction, single_tensor_grad_diff_
from hessian_lr.training.loop import GLOBAL_RNG_LOCK, RunResult, initial_model, train_run
from hessian_lr.workloads import Workload

__all__ = ["can_batch", "train_batch", "batched_spec"]


# -- which arms batch ---------------------------------------------------------------------------

def batched_spec(arm_name: str) -> UpdateRule | None:
    """The update rule this module reproduces for ``arm_name``, or None when it cannot.

    Built-in arms declare their rule (``Arm.update_rule``; the tests check each against the
    optimizer the arm builds). For any other arm the rule is read off the optimizer it builds on a
    dummy parameter, so an arm whose definition changes (another class, amsgrad, a second param
    group, another curvature estimator, ``nonfinite="skip"``, a wider state dtype) is never
    batched with the wrong math.
    """
    arm = ARMS.get(arm_name)
    if arm is None or arm.second_order:
        return None
    if arm.update_rule is not None:
        return arm.update_rule
    try:
        optimizer = arm.build([torch.zeros(2, requires_grad=True)], 1e-3)
    except Exception:  # noqa: BLE001 - an arm we cannot even build is not batchable
        return None
    return update_rule_of(optimizer)


def can_batch(arm_name: str, workload: Workload | None = None) -> bool:
    """Whether :func:`train_batch` trains ``arm_name`` (and ``workload``'s model) batched;
    otherwise it falls back to sequential ``train_run`` calls."""
    if batched_spec(arm_name) is None:
        return False
    return workload is None or _model_path(workload) is not None


# -- flat parameter layout ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Layout:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    numel: int

    @classmethod
    def of(cls, model: nn.Module) -> _Layout:
        names, shapes, offsets, total = [], [], [], 0
        for name, p in model.named_parameters():
            names.append(name)
            shapes.append(tuple(p.shape))
            offsets.append(total)
            total += p.numel()
        return cls(tuple(names), tuple(shapes), tuple(offsets), total)

    def view(self, flat: Tensor, i: int) -> Tensor:
        size = math.prod(self.shapes[i])
        return flat[:, self.offsets[i] : self.offsets[i] + size].view(flat.shape[0], *self.shapes[i])

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        return {name: self.view(flat, i) for i, name in enumerate(self.names)}


def _flatten(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# -- gradients: the dedicated MLP path and the generic torch.func path -------------------------

class _MLP:
    """Batched forward/backward of an ``nn.Sequential`` of Linear (with bias) and ReLU layers
    trained with mean cross-entropy; gradients go straight into a flat ``[K, P]`` buffer."""

    def __init__(self, model: nn.Sequential, layout: _Layout) -> None:
        self.layers: list[tuple[int, int, int, int]] = []  # (w index, b index, out, in)
        index = {name: i for i, name in enumerate(layout.names)}
        for name, module in model.named_children():
            if isinstance(module, nn.Linear):
                self.layers.append((index[f"{name}.weight"], index[f"{name}.bias"],
                                    module.out_features, module.in_features))
        self.layout = layout
        self._views: list[tuple[Tensor, list[tuple[Tensor, Tensor, Tensor, Tensor]]]] = []
        self._minus_ones_key: tuple | None = None
        self._minus_ones = torch.empty(0)

    @staticmethod
    def supports(model: nn.Module, loss_fn: Callable) -> bool:
        if loss_fn is not nn.functional.cross_entropy or not isinstance(model, nn.Sequential):
            return False
        if any(True for _ in model.buffers()):
            return False
        kinds = [type(m) for m in model]
        if not kinds or kinds[0] is not nn.Linear or kinds[-1] is not nn.Linear:
            return False
        for prev, cur in zip(kinds, kinds[1:]):
            if cur not in (nn.Linear, nn.ReLU) or (prev is cur is nn.ReLU) or (prev is cur is nn.Linear):
                return False  # strictly Linear (ReLU Linear)*
        linears = [m for m in model if isinstance(m, nn.Linear)]
        return all(m.bias is not None for m in linears) and all(
            a.out_features == b.in_features for a, b in zip(linears, linears[1:]))

    def _weights(self, flat: Tensor) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """``(W, b, b as a column, W transposed)`` views of every Linear into ``flat``. The same
        two buffers (parameters, gradients) serve every step, so their views are kept: making them
        per step was ~5% of a step's time, in Python, where two lanes contend for the GIL."""
        for cached, views in self._views:
            if cached is flat:
                return views
        views = []
        for w_index, b_index, _, _ in self.layers:
            w, b = self.layout.view(flat, w_index), self.layout.view(flat, b_index)
            views.append((w, b, b.unsqueeze(2), w.transpose(1, 2)))
        self._views = [(flat, views), *self._views[:1]]  # the parameters' and the gradients'
        return views

    def _minus_one(self, shape: torch.Size, dtype: torch.dtype) -> Tensor:
        """A cached tensor of -1 (the one-hot term of the softmax gradient)."""
        key = (tuple(shape), dtype)
        if self._minus_ones_key != key:
            self._minus_ones_key, self._minus_ones = key, torch.full(shape, -1.0, dtype=dtype)
        return self._minus_ones

    # Activations are kept feature-major, [K, features, B]: z^T = W a^T + b. Against the row-major
    # form this turns the last layer's forward (10 outputs) into a GEMM with a wide output
    # (2.4x faster there) and needs no transposed copies; the other GEMMs cost the same.
    def logits(self, flat: Tensor, x: Tensor) -> Tensor:
        """``x``: ``[K, N, in]`` (an expanded view is fine) -> logits ``[K, classes, N]``."""
        weights = self._weights(flat)
        a = x.transpose(1, 2)
        for i, (w, _, bias, _) in enumerate(weights):
            a = torch.baddbmm(bias, w, a)
            if i < len(weights) - 1:
                a = a.relu_()
        return a

    def grad_(self, flat: Tensor, grad: Tensor, x: Tensor, y: Tensor) -> None:
        """Write d(mean cross-entropy)/d(params) of every model into ``grad`` (``[K, P]``)."""
        weights = self._weights(flat)
        a = x.transpose(1, 2)  # [K, in, B]
        acts = [a]
        for i, (w, _, bias, _) in enumerate(weights):
            a = torch.baddbmm(bias, w, a)  # [K, out, B]
            if i < len(weights) - 1:
                a = a.relu_()
                acts.append(a)
        # d loss / d logits = (softmax - onehot) / B; a hand-written softmax is several times
        # faster than torch.softmax on these small class dimensions.
        dz = (a - a.amax(dim=1, keepdim=True)).exp_()
        dz.div_(dz.sum(dim=1, keepdim=True))
        index = y.unsqueeze(1)
        dz.scatter_add_(1, index, self._minus_one(index.shape, dz.dtype))
        dz.mul_(1.0 / x.shape[1])
        grads = self._weights(grad)
        for i in range(len(weights) - 1, -1, -1):
            torch.bmm(dz, acts[i].transpose(1, 2), out=grads[i][0])
            torch.sum(dz, dim=2, out=grads[i][1])
            if i:
                dz = torch.ops.aten.threshold_backward(torch.bmm(weights[i][3], dz), acts[i], 0.0)

    def loss_and_accuracy(self, flat: Tensor, x: Tensor, y: Tensor, accuracy: bool = True) -> tuple[Tensor, Tensor | None]:
        return _loss_and_accuracy(self.logits(flat, x), y, class_dim=1, accuracy=accuracy)


class _Functional:
    """Generic path: ``vmap(grad(loss(functional_call(model, params, x), y)))`` over the rows."""

    def __init__(self, model: nn.Module, layout: _Layout, loss_fn: Callable) -> None:
        from torch.func import functional_call, grad, vmap

        self.layout = layout
        model = model.eval()

        def loss_one(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return loss_fn(functional_call(model, params, (x,)), y)

        def logits_one(params: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(model, params, (x,))

        self._grad = vmap(grad(loss_one))
        self._loss = vmap(loss_fn, in_dims=(0, None))
        self._logits = vmap(logits_one)

    @staticmethod
    def supports(model: nn.Module) -> bool:
        if any(True for _ in model.buffers()):
            return False  # BatchNorm & co: running statistics are not batched here
        return not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())

    def loss_and_accuracy(self, flat: Tensor, x: Tensor, y: Tensor, accuracy: bool = True) -> tuple[Tensor, Tensor | None]:
        logits = self._logits(self.layout.views(flat), x)  # [K, N, C]
        loss = self._loss(logits, y)  # the workload's own loss, as train_run's evaluate uses it
        return loss, (logits.argmax(dim=2) == y).float().mean(dim=1) if accuracy else None

    def grad_(self, flat: Tensor, grad: Tensor, x: Tensor, y: Tensor) -> None:
        grads = self._grad(self.layout.views(flat), x, y)
        torch.cat([grads[name].reshape(grad.shape[0], -1) for name in self.layout.names], dim=1, out=grad)


def _model_path(workload: Workload, model: nn.Module | None = None) -> str | None:
    """``"mlp"``, ``"functional"`` or None (not batchable). Builds a throwaway model when none is
    given, without disturbing torch's global RNG."""
    if model is None:
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            model = workload.build_model()
    if _MLP.supports(model, workload.loss_fn):
        return "mlp"
    if _Functional.supports(model):
        return "functional"
    return None


# -- the batched optimizer ----------------------------------------------------------------------

class _FlatOptimizer:
    """One optimizer step for all ``K`` rows at once; ``lr`` is a ``[K, 1]`` column."""

    def __init__(self, spec: UpdateRule, params: Tensor, *, fused: bool = True) -> None:
        self.spec = spec
        self.step_count = 0
        zeros = lambda: torch.zeros_like(params)  # noqa: E731
        self.state: dict[str, Tensor] = {}
        if spec.hessian:
            self.state.update(prev_grad=zeros(), h=zeros())
        if spec.base == "adam":
            self.state.update(exp_avg=zeros(), exp_avg_sq=zeros())
        elif spec.momentum:
            self.state.update(momentum_buffer=zeros())
        self.scratch = zeros()
        self.step_tensor = torch.zeros((), dtype=torch.float32)
        self.fused = fused and spec.base == "adam" and hasattr(torch, "_fused_adam_") and params.device.type == "cpu"
        # The wrapper's compiled grad-diff kernel where it is built (as the wrapper itself uses it):
        # one pass over memory instead of eight elementwise ops.
        self.kernel = _kernel.load(compile=False) if spec.hessian and params.device.type == "cpu" else None

    def keep_rows(self, rows: Tensor) -> None:
        self.state = {k: v[rows].contiguous() for k, v in self.state.items()}
        self.scratch = self.scratch[rows].contiguous()

    def zero_rows(self, rows: Tensor) -> None:
        for v in self.state.values():
            v[rows] = 0.0

    @torch.no_grad()
    def step(self, params: Tensor, grad: Tensor, lr: Tensor) -> None:
        """``params -= update(grad)``; ``grad`` is used as scratch and overwritten."""
        spec, state, tmp = self.spec, self.state, self.scratch
        self.step_count += 1
        t = self.step_count
        if spec.hessian and self.kernel is not None:
            self.kernel.grad_diff_tensor_(grad, state["prev_grad"], state["h"], spec.curvature_beta,
                                          spec.curvature_eps, 1.0 / bias_correction(spec.curvature_beta, t))
        elif spec.hessian:  # HessianLRAdaptation's grad-diff math: the wrapper's own functional step
            single_tensor_grad_diff_(grad, state["prev_grad"], state["h"], beta=spec.curvature_beta,
                                     eps=spec.curvature_eps, step=t)
        if spec.base == "adam":
            if spec.weight_decay:
                if spec.decoupled:
                    params.mul_(1.0 - lr * spec.weight_decay)
                else:
                    grad.add_(params, alpha=spec.weight_decay)
            beta1, beta2 = spec.betas
            m, v = state["exp_avg"], state["exp_avg_sq"]
            if self.fused:
                # torch's fused Adam kernel (what the arms run) in one pass, with lr 1 on a zeroed
                # scratch tensor; the per-model lr is applied afterwards.
                tmp.zero_()
                self.step_tensor.fill_(t)
                torch._fused_adam_([tmp], [grad], [m], [v], [], [self.step_tensor], lr=1.0, beta1=beta1,
                                   beta2=beta2, weight_decay=0.0, eps=spec.eps, amsgrad=False, maximize=False)
                params.addcmul_(tmp, lr)
                return
            m.lerp_(grad, 1.0 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            bias1, bias2_sqrt = 1.0 - beta1**t, math.sqrt(1.0 - beta2**t)
            torch.sqrt(v, out=tmp)
            tmp.div_(bias2_sqrt).add_(spec.eps)
            torch.div(m, tmp, out=tmp)
            params.addcmul_(tmp, lr, value=-1.0 / bias1)
        else:
            if spec.weight_decay:
                grad.add_(params, alpha=spec.weight_decay)
            if spec.momentum:
                buf = state["momentum_buffer"]
                if t == 1:
                    buf.copy_(grad)
                else:
                    buf.mul_(spec.momentum).add_(grad, alpha=1.0 - spec.dampening)
                if spec.nesterov:
                    grad.add_(buf, alpha=spec.momentum)
                else:
                    grad = buf
            params.addcmul_(grad, lr, value=-1.0)


# -- training -----------------------------------------------------------------------------------

def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _loss_and_accuracy(logits: Tensor, y: Tensor, class_dim: int, accuracy: bool = True) -> tuple[Tensor, Tensor | None]:
    """Per-model mean cross-entropy and (unless ``accuracy`` is False) accuracy; ``logits``
    ``[K, C, N]`` (``class_dim`` 1) or ``[K, N, C]`` (``class_dim`` 2), ``y`` ``[N]``."""
    logp = logits - torch.logsumexp(logits, dim=class_dim, keepdim=True)  # log_softmax, faster here
    index = y.expand(logits.shape[0], -1).unsqueeze(class_dim)
    picked = logp.gather(class_dim, index).squeeze(class_dim)
    if not accuracy:
        return -picked.mean(dim=1), None
    return -picked.mean(dim=1), (logits.argmax(dim=class_dim) == y).float().mean(dim=1)


def train_batch(
    workload: Workload,
    arm_name: str,
    runs: list[tuple[float, int]],
    *,
    epochs: int,
    evaluate_test: bool = True,
    on_epoch: Callable[[int], None] | None = None,
) -> list[RunResult]:
    """Train one model per ``(lr, seed)`` in ``runs`` at once; results in the order of ``runs``,
    each as :func:`~hessian_lr.training.loop.train_run` would return it (see the module docstring
    for the tolerance and for how wall time is apportioned).

    Falls back to sequential ``train_run`` calls when the arm or the model cannot be batched
    (:func:`can_batch`). ``on_epoch(epoch)`` is called after every epoch in which at least one
    model trained, once all of them have been validated.
    """
    runs = [(float(lr), int(seed)) for lr, seed in runs]
    if not runs:
        return []
    spec = batched_spec(arm_name)
    path = _model_path(workload) if spec is not None else None
    if spec is None or path is None:  # not batchable: the sequential reference, run by run
        arm = get_arm(arm_name)
        results = []
        for lr, seed in runs:
            results.append(train_run(workload, arm, lr, epochs=epochs, seed=seed, evaluate_test=evaluate_test))
        if on_epoch is not None:
            for epoch in range(1, epochs + 1):
                on_epoch(epoch)
        return results

    data = workload.data
    loss_fn, batch_size, n = workload.loss_fn, workload.batch_size, len(data.x_train)

    # Initial weights exactly as train_run builds them.
    rows: dict[int, Tensor] = {}
    model = None
    for _, seed in runs:
        if seed not in rows:
            model = initial_model(workload, seed)
            rows[seed] = _flatten(model)
    assert model is not None
    layout = _Layout.of(model)
    engine: _MLP | _Functional = _MLP(model, layout) if path == "mlp" else _Functional(model, layout, loss_fn)

    k = len(runs)
    params = torch.stack([rows[seed] for _, seed in runs])  # [K, P]
    grad = torch.empty_like(params)
    lr = torch.tensor([lr for lr, _ in runs], dtype=params.dtype).unsqueeze(1)  # [K, 1]
    optimizer = _FlatOptimizer(spec, params)
    seeds = sorted({seed for _, seed in runs})
    generators = {seed: torch.Generator().manual_seed(seed) for seed in seeds}
    run_seed_slot = torch.tensor([seeds.index(seed) for _, seed in runs])
    active = torch.arange(k)  # original indices of the rows still training

    def validate() -> Tensor:  # the curves need the loss only (an argmax over [K, C, N] is ~25% of a pass)
        with torch.no_grad():
            return engine.loss_and_accuracy(params, data.x_val.expand(params.shape[0], -1, -1), data.y_val,
                                            accuracy=False)[0]

    curves: list[list[float | None]] = [[] for _ in runs]
    walls: list[list[float]] = [[] for _ in runs]
    diverged = [False] * k
    val0 = validate()
    for row, value in enumerate(val0.tolist()):
        curves[row].append(_finite(value))
    share = [0.0] * k
    for epoch in range(1, epochs + 1):
        if len(active) == 0:
            break
        epoch_start = time.perf_counter()
        orders = torch.stack([torch.randperm(n, generator=generators[seed]) for seed in seeds])  # [S, n]
        slots = run_seed_slot[active]
        if len(seeds) == 1:  # one batch order for all: a broadcast view instead of K copies
            x_epoch = data.x_train[orders[0]].expand(len(active), -1, -1)
            y_epoch = data.y_train[orders[0]].expand(len(active), -1)
        else:
            order = orders[slots]  # [K, n]
            x_epoch, y_epoch = data.x_train[order], data.y_train[order]
        frozen = torch.zeros(len(active), dtype=torch.bool)
        with torch.no_grad():
            for i in range(0, n, batch_size):
                engine.grad_(params, grad, x_epoch[:, i : i + batch_size], y_epoch[:, i : i + batch_size])
                if not bool(grad.sum().isfinite()):  # one reduction over all rows; rows checked only if needed
                    bad = ~grad.isfinite().all(dim=1)  # exact check (a huge finite sum can overflow)
                    if bool(bad.any()):
                        frozen |= bad
                        lr[bad] = 0.0
                        params[bad] = 0.0
                        optimizer.zero_rows(bad)
                    grad[frozen] = 0.0
                optimizer.step(params, grad, lr)
        val_loss = validate()
        elapsed = time.perf_counter() - epoch_start
        keep = []
        for row, (index, value) in enumerate(zip(active.tolist(), val_loss.tolist())):
            share[index] += elapsed / len(active)
            walls[index].append(share[index])
            if bool(frozen[row]) or not math.isfinite(value):
                diverged[index] = True
                curves[index].append(None)
            else:
                curves[index].append(value)
                keep.append(row)
        if len(keep) < len(active):
            keep_t = torch.tensor(keep, dtype=torch.long)
            active, params, lr = active[keep_t], params[keep_t].contiguous(), lr[keep_t].contiguous()
            grad = torch.empty_like(params)
            optimizer.keep_rows(keep_t)
        if on_epoch is not None:
            on_epoch(epoch)

    test: dict[int, tuple[float, float]] = {}
    if evaluate_test and len(active):
        with torch.no_grad():
            test_loss, test_acc = engine.loss_and_accuracy(
                params, data.x_test.expand(params.shape[0], -1, -1), data.y_test)
        test = {index: (loss, acc) for index, loss, acc in zip(active.tolist(), test_loss.tolist(),
                                                                 test_acc.tolist())}

    results = []
    for index, (lr_value, seed) in enumerate(runs):
        result = RunResult(lr=lr_value, seed=seed, epochs=epochs, val_loss_curve=curves[index],
                           val_loss=curves[index][-1], wall_s=share[index], epoch_wall_s=walls[index],
                           diverged=diverged[index])
        if index in test:
            result.test_loss, result.test_accuracy = _finite(test[index][0]), test[index][1]
        results.append(result)
    return results
