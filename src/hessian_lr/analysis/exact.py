"""The exact Hessian diagonal of a workload's objective with respect to every parameter.

:func:`workload_hessian_diagonal` takes the workload's route (``Workload.curvature``) and adds the
L2 penalty's exact contribution (``l2`` on every coordinate). The routes, fastest first, each
checked against ``torch.autograd.functional.hessian`` in float64 in the tests:

* ``"closed-form"`` — the model knows its Hessian (``model.hessian_diagonal()``; the quadratics).
* ``"gauss-newton"`` — :func:`gauss_newton_diagonal`: the diagonal of
  ``(1/N) Σ_n J_nᵀ (∂²ℓ_n/∂f²) J_n``. Each row's output Hessian is factored, ``Σ_c u_c u_cᵀ``
  (:func:`loss_hessian_factors`: any convex per-row loss — cross-entropy gives
  ``diag p − p pᵀ``, mean squared error ``(2/K) I``), and the squared per-sample products
  ``J_nᵀ u_c`` are summed: one backward per factor column. The full Hessian adds
  ``Σ_c (∂ℓ/∂f_c) ∂²f_c/∂θ_i²``, which is zero when each parameter enters the output piecewise
  linearly (Linear/Conv layers joined by ReLU, max/avg pooling): then this *is* the exact diagonal.
* ``"hvp"`` — :func:`hessian_diagonal_by_outputs`: Hessian-vector products, organised so that
  their number does not grow with the parameter count where that can be avoided. For a
  ``Linear`` layer called once per forward on ``a [N, S, in]`` (``S`` positions), its output
  ``o`` depends on ``W`` linearly and ``a`` does not depend on ``W``, so
  ``∂²L/∂W_ij² = Σ_n Σ_{s,t} a_nsj a_ntj ∂²L/∂o_nsi∂o_nti`` exactly; the per-sample blocks of the
  Hessian with respect to ``o`` come from ``S·out`` products with directions ``e_(t,i)`` set for
  every row at once (rows do not interact, so the Hessian in ``o`` is block-diagonal over rows).
  The same holds for ``LayerNorm``'s affine parameters and token/position embeddings. Every other
  parameter (a recurrent cell's weights, used at every time step) gets one product per coordinate
  (:func:`hessian_diagonal_hvp`). The transformer needs ~1.2k products instead of 14.9k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from hessian_lr.workloads.base import Workload

__all__ = [
    "workload_hessian_diagonal",
    "loss_hessian_factors",
    "gauss_newton_diagonal",
    "gauss_newton_diagonal_ce",
    "hessian_diagonal_by_outputs",
    "hessian_diagonal_hvp",
    "is_piecewise_linear",
    "exact_hessian_diagonal",
]

# Modules whose parameters enter their output linearly and that are otherwise piecewise linear.
_PIECEWISE_LINEAR = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Flatten,
    nn.Identity,
    nn.Sequential,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.Dropout,  # identity in eval mode, where the diagonal is computed
)
_MLP_MODULES = (nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Sequential, nn.Identity, nn.Flatten, nn.Dropout)

LossFn = Callable[[Tensor, Tensor], Tensor]


def _trainable(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


# -- the workload-level entry point -------------------------------------------------------------------

def workload_hessian_diagonal(
    workload: Workload, model: nn.Module, x: Tensor, y: Tensor, *, route: str | None = None
) -> list[Tensor]:
    """Exact ``diag ∇²[loss_fn(model(x), y) + (l2/2)·Σ‖p‖²]``, one tensor per trainable parameter
    (in ``model.parameters()`` order), by ``route`` (default: ``workload.curvature``).

    Args:
        workload: supplies ``loss_fn``, ``l2`` and the default route.
        model: the model at the point of interest (put it in eval mode; it has no dropout anyway).
        x, y: the rows the objective averages over (ignored by ``"closed-form"``).
        route: ``"closed-form"``, ``"gauss-newton"`` or ``"hvp"`` to override the workload's.

    Returns:
        The diagonal, detached, in the parameters' dtype.
    """
    route = route or workload.curvature
    if route == "closed-form":
        diag = model.hessian_diagonal()
        diagonals = list(diag) if isinstance(diag, (list, tuple)) else [diag]
    elif route == "gauss-newton":
        diagonals = gauss_newton_diagonal(model, x, y, workload.loss_fn)
    elif route == "hvp":
        diagonals = hessian_diagonal_by_outputs(model, x, y, workload.loss_fn)
    elif route == "none":
        raise ValueError(f"workload {workload.name!r} has no exact Hessian diagonal (its curvature route is "
                         "'none': too large for per-coordinate products)")
    else:
        raise ValueError(f"route must be 'closed-form', 'gauss-newton' or 'hvp', got {route!r}")
    # the penalty (l2/2)·Σ p² contributes exactly l2 to every diagonal entry
    return [d.detach() + workload.l2 if workload.l2 else d.detach() for d in diagonals]


# -- Gauss–Newton -------------------------------------------------------------------------------------

def loss_hessian_factors(loss_fn: LossFn, outputs: Tensor, targets: Tensor) -> Tensor:
    """Per-row factors ``u [N, C, C]`` with ``Σ_c u[n, c]ᵀ u[n, c] = ∂²ℓ_n/∂f_n²``, where the batch
    loss is ``(1/N) Σ_n ℓ_n`` and ``ℓ_n = loss_fn(f_n[None], y_n[None])``.

    Computed for any loss by ``torch.func`` per row and a symmetric square root
    (eigenvalues clipped at 0: Gauss–Newton is meant for convex per-row losses). Cross-entropy
    has the closed form :func:`_class_factors`, used directly.
    """
    if loss_fn is nn.functional.cross_entropy:
        return _class_factors(outputs)
    from torch.func import jacrev, vmap

    flat = outputs.detach().reshape(outputs.shape[0], -1)

    def row_loss(f: Tensor, t: Tensor) -> Tensor:
        return loss_fn(f.reshape(outputs.shape[1:]).unsqueeze(0), t.unsqueeze(0))

    # reverse-over-reverse: torch.func.hessian (forward-over-reverse) goes through a deprecated
    # torch.jit.script decomposition for mse_loss
    h = vmap(jacrev(jacrev(row_loss)))(flat, targets)  # [N, C, C]
    eigenvalues, vectors = torch.linalg.eigh(h)
    # u[n, c, :] = sqrt(λ_c) v_c: Σ_c u_c u_cᵀ = V Λ Vᵀ
    return (vectors * eigenvalues.clamp_min(0).sqrt().unsqueeze(-2)).transpose(-1, -2)


def _class_factors(logits: Tensor) -> Tensor:
    """``u[n, c, :] = sqrt(p_c) (e_c − p)``, so that ``Σ_c u_c u_cᵀ = diag p − p pᵀ`` per row."""
    probs = torch.softmax(logits.detach(), dim=-1)
    eye = torch.eye(probs.shape[-1], dtype=probs.dtype, device=probs.device)
    return probs.sqrt().unsqueeze(-1) * (eye.unsqueeze(0) - probs.unsqueeze(1))


def gauss_newton_diagonal(
    model: nn.Module, x: Tensor, y: Tensor | None, loss_fn: LossFn = nn.functional.cross_entropy, *,
    chunk_size: int = 256,
) -> list[Tensor]:
    """Diagonal of the Gauss–Newton matrix of ``loss_fn(model(x), y)`` (a mean over rows), one
    tensor per trainable parameter. Exact Hessian diagonal for piecewise-linear networks.

    MLPs (``Linear``/``ReLU`` only) take a form without per-sample tensors; anything else squares
    per-sample vector-Jacobian products under ``torch.func.vmap``. ``y`` may be None for
    cross-entropy (its output Hessian does not depend on the labels).
    """
    if all(isinstance(m, _MLP_MODULES) for m in model.modules()):
        return _gauss_newton_diagonal_linear(model, x, y, loss_fn, chunk_size=max(chunk_size, 1024))
    return _gauss_newton_diagonal_vmap(model, x, y, loss_fn, chunk_size=chunk_size)


def gauss_newton_diagonal_ce(
    model: nn.Module, x: Tensor, y: Tensor | None = None, *, chunk_size: int = 256
) -> list[Tensor]:
    """:func:`gauss_newton_diagonal` of the mean cross-entropy (independent of the labels)."""
    return gauss_newton_diagonal(model, x, y, nn.functional.cross_entropy, chunk_size=chunk_size)


def _factors_for(loss_fn: LossFn, outputs: Tensor, y: Tensor | None) -> Tensor:
    if y is None and loss_fn is not nn.functional.cross_entropy:
        raise ValueError("targets are needed for the output Hessian of a loss other than cross-entropy")
    return loss_hessian_factors(loss_fn, outputs, y)


def _gauss_newton_diagonal_linear(model: nn.Module, x: Tensor, y: Tensor | None, loss_fn: LossFn, *,
                                  chunk_size: int) -> list[Tensor]:
    """Fast exact form for MLPs: per-sample Linear gradients are ``δ aᵀ``, so the sum of their
    squares over samples is ``(δ²)ᵀ (a²)`` — one backward per factor column, no per-sample tensors."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    params = _trainable(model)
    totals = {id(p): torch.zeros_like(p) for p in params}
    seen: dict[nn.Linear, tuple[Tensor, Tensor]] = {}

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        seen[module] = (inputs[0].detach(), output)

    handles = [m.register_forward_hook(hook) for m in linears]
    try:
        with torch.enable_grad():
            for start in range(0, x.shape[0], chunk_size):
                seen.clear()
                outputs = model(x[start : start + chunk_size])
                u = _factors_for(loss_fn, outputs, None if y is None else y[start : start + chunk_size])
                layer_outputs = [seen[m][1] for m in linears]
                for c in range(u.shape[1]):
                    deltas = torch.autograd.grad(outputs, layer_outputs, grad_outputs=u[:, c, :].reshape(outputs.shape),
                                                 retain_graph=True)
                    for m, delta in zip(linears, deltas):
                        inp = seen[m][0]
                        d2 = delta.square()
                        if m.weight.requires_grad:
                            totals[id(m.weight)] += d2.reshape(-1, d2.shape[-1]).T @ inp.square().reshape(-1, inp.shape[-1])
                        if m.bias is not None and m.bias.requires_grad:
                            totals[id(m.bias)] += d2.reshape(-1, d2.shape[-1]).sum(0)
                del outputs, layer_outputs
    finally:
        for h in handles:
            h.remove()
        seen.clear()
    return [totals[id(p)] / x.shape[0] for p in params]


def _gauss_newton_diagonal_vmap(model: nn.Module, x: Tensor, y: Tensor | None, loss_fn: LossFn, *,
                                chunk_size: int) -> list[Tensor]:
    """General form: squared per-sample vector-Jacobian products with ``torch.func.vmap``."""
    from torch.func import functional_call, vjp, vmap

    named = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    totals = {k: torch.zeros_like(v) for k, v in named.items()}

    def per_sample(xi: Tensor, ui: Tensor) -> dict[str, Tensor]:
        def outputs_of(pd: dict[str, Tensor]) -> Tensor:
            return functional_call(model, (pd, buffers), (xi.unsqueeze(0),)).squeeze(0)

        _, pullback = vjp(outputs_of, named)
        (cotangents,) = vmap(pullback)(ui)  # one vector-Jacobian product per factor column
        return {k: v.square().sum(0) for k, v in cotangents.items()}

    batched = vmap(per_sample)
    with torch.no_grad():
        outputs = model(x)
    n = x.shape[0]
    for start in range(0, n, chunk_size):
        rows = slice(start, start + chunk_size)
        u = _factors_for(loss_fn, outputs[rows], None if y is None else y[rows])
        u = u.reshape(u.shape[0], u.shape[1], *outputs.shape[1:])
        for k, v in batched(x[rows], u).items():
            totals[k] += v.sum(0)
    return [totals[k] / n for k in named]


def is_piecewise_linear(model: nn.Module) -> bool:
    """True when every submodule is in the whitelist where GN diagonal == Hessian diagonal.

    A conservative structural check: a custom module whose ``forward`` is piecewise linear (the
    mnist1d CNN) returns False; its workload declares ``curvature="gauss-newton"`` instead.
    """
    return all(isinstance(m, _PIECEWISE_LINEAR) for m in model.modules())


# -- Hessian-vector products --------------------------------------------------------------------------

def hessian_diagonal_hvp(
    loss_fn: Callable[[], Tensor], params: Sequence[Tensor], *, block_size: int = 256
) -> list[Tensor]:
    """Exact ``diag(∇²L)`` for every tensor in ``params`` by one Hessian-vector product per
    coordinate (batched in blocks with ``is_grads_batched``).

    ``loss_fn()`` builds the scalar loss (called once). Only the within-tensor block of the
    Hessian is probed, which holds the whole diagonal.
    """
    params = list(params)
    with torch.enable_grad():
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        diagonals = [_diagonal_by_unit_products(g, p, block_size) for p, g in zip(params, grads)]
    del grads
    return diagonals


def _diagonal_by_unit_products(grad: Tensor | None, param: Tensor, block_size: int) -> Tensor:
    """``diag(∂grad/∂param)`` from products with blocks of unit vectors (graph retained)."""
    n = param.numel()
    diag = torch.zeros(n, dtype=param.dtype, device=param.device)
    if grad is None or not grad.requires_grad:
        return diag.reshape(param.shape)
    flat = grad.reshape(-1)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        rows = torch.arange(stop - start, device=param.device)
        units = torch.zeros(stop - start, n, dtype=param.dtype, device=param.device)
        units[rows, rows + start] = 1.0
        (columns,) = torch.autograd.grad(flat, param, grad_outputs=units, retain_graph=True, is_grads_batched=True,
                                         allow_unused=True)
        if columns is not None:
            diag[start:stop] = columns.reshape(stop - start, -1)[rows, rows + start]
    return diag.reshape(param.shape).detach()


class _Site:
    """A module whose parameters enter its output (multi-)linearly, called once per forward."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.inputs: Tensor | None = None
        self.output: Tensor | None = None
        self.calls = 0

    def record(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.calls += 1
        self.inputs, self.output = inputs[0], output


def _site_modules(model: nn.Module) -> list[nn.Module]:
    """Modules with a rule below whose parameters are all their own (not shared with another)."""
    from hessian_lr.workloads.transformer import TokenPositionEmbedding

    rules = (nn.Linear, nn.LayerNorm, nn.Embedding, TokenPositionEmbedding)
    owners: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    return [m for m in model.modules() if isinstance(m, rules) and any(True for _ in m.parameters(recurse=False))
            and all(owners[id(p)] == 1 for p in m.parameters(recurse=False))]


def _output_hessian_blocks(grad_out: Tensor, out: Tensor, block_size: int) -> Tensor:
    """``B[i, n, s, t] = ∂²L/∂o_nsi∂o_nti`` for ``out`` viewed as ``[N, S, m]``.

    One product per direction ``e_(t,i)`` (set in every row at once), batched in blocks.
    """
    n, m = out.shape[0], out.shape[-1]
    positions = out[0].numel() // m
    blocks = torch.zeros(m, n, positions, positions, dtype=out.dtype, device=out.device)
    directions = [(t, i) for i in range(m) for t in range(positions)]
    for start in range(0, len(directions), block_size):
        chunk = directions[start : start + block_size]
        units = torch.zeros(len(chunk), n, positions, m, dtype=out.dtype, device=out.device)
        for c, (t, i) in enumerate(chunk):
            units[c, :, t, i] = 1.0
        (columns,) = torch.autograd.grad(grad_out, out, grad_outputs=units.reshape(len(chunk), *out.shape),
                                         retain_graph=True, is_grads_batched=True)
        columns = columns.reshape(len(chunk), n, positions, m)
        for c, (t, i) in enumerate(chunk):
            blocks[i, :, :, t] = columns[c, :, :, i]
    return blocks


def _site_diagonals(site: _Site, blocks: Tensor) -> dict[int, Tensor]:
    """Each of the site module's parameters' diagonals from the output-Hessian ``blocks``."""
    module, m = site.module, blocks.shape[0]
    n, positions = blocks.shape[1], blocks.shape[2]
    total = blocks.sum(dim=(2, 3))  # Σ_{s,t} B_i[n, s, t]: [m, N]
    out: dict[int, Tensor] = {}
    if isinstance(module, nn.Linear):
        a = site.inputs.detach().reshape(n, positions, -1)
        out[id(module.weight)] = torch.einsum("inst,nsj,ntj->ij", blocks, a, a)
        if module.bias is not None:
            out[id(module.bias)] = total.sum(1)
    elif isinstance(module, nn.LayerNorm):
        normed = nn.functional.layer_norm(site.inputs.detach(), module.normalized_shape, eps=module.eps)
        a = normed.reshape(n, positions, m)
        if module.weight is not None:
            out[id(module.weight)] = torch.einsum("inst,nsi,nti->i", blocks, a, a).reshape(module.weight.shape)
        if module.bias is not None:
            out[id(module.bias)] = total.sum(1).reshape(module.bias.shape)
    else:  # nn.Embedding / TokenPositionEmbedding: o = onehot(tokens) @ E (+ P)
        vocab = torch.arange(module.weight.shape[0], device=blocks.device)
        onehot = (site.inputs.detach().long().reshape(n, positions, 1) == vocab).to(blocks.dtype)
        out[id(module.weight)] = torch.einsum("jnst,nsv,ntv->vj", blocks, onehot, onehot)
        position = getattr(module, "position", None)
        if position is not None:
            out[id(position)] = torch.diagonal(blocks, dim1=2, dim2=3).sum(1).T.reshape(position.shape)
    return out


def hessian_diagonal_by_outputs(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, *, block_size: int = 16
) -> list[Tensor]:
    """Exact ``diag ∇² loss_fn(model(x), y)`` by Hessian-vector products (see the module docstring):
    per module output for ``Linear``, ``LayerNorm``, ``Embedding`` and token/position embeddings
    called once per forward, per coordinate for every other parameter.

    Needs a model whose rows do not interact (no batch statistics). Returns one tensor per
    trainable parameter.
    """
    params = _trainable(model)
    sites = [_Site(m) for m in _site_modules(model)]
    handles = [s.module.register_forward_hook(s.record) for s in sites]
    try:
        with torch.enable_grad():
            loss = loss_fn(model(x), y)
    finally:
        for h in handles:
            h.remove()
    sites = [s for s in sites if s.calls == 1 and s.output is not None and s.output.requires_grad]
    covered = {id(p) for s in sites for p in s.module.parameters(recurse=False) if p.requires_grad}
    rest = [p for p in params if id(p) not in covered]
    diagonals: dict[int, Tensor] = {}
    with torch.enable_grad():
        grads = torch.autograd.grad(loss, [s.output for s in sites] + rest, create_graph=True, allow_unused=True)
        for site, grad_out in zip(sites, grads[: len(sites)]):
            if grad_out is None:  # the output does not reach the loss
                continue
            blocks = _output_hessian_blocks(grad_out, site.output, block_size)
            diagonals.update(_site_diagonals(site, blocks))
        for p, g in zip(rest, grads[len(sites) :]):
            diagonals[id(p)] = _diagonal_by_unit_products(g, p, block_size)
    del grads, loss
    return [diagonals.get(id(p), torch.zeros_like(p)).detach().reshape(p.shape) for p in params]


# -- the model-level entry point kept for cross-entropy callers ---------------------------------------

def exact_hessian_diagonal(
    model: nn.Module, x: Tensor, y: Tensor, *, method: str = "auto", chunk_size: int = 256,
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> list[Tensor]:
    """Exact diagonal of the Hessian of ``loss_fn(model(x), y)`` (default: mean cross-entropy).

    ``method``: ``"gauss-newton"`` (exact only for piecewise-linear networks), ``"hvp"`` (any
    network, :func:`hessian_diagonal_by_outputs`) or ``"auto"`` (gauss-newton when
    :func:`is_piecewise_linear`, else hvp). Workloads should call :func:`workload_hessian_diagonal`.
    """
    if method == "auto":
        method = "gauss-newton" if is_piecewise_linear(model) else "hvp"
    if method == "gauss-newton":
        return gauss_newton_diagonal(model, x, y, loss_fn, chunk_size=chunk_size)
    if method == "hvp":
        return hessian_diagonal_by_outputs(model, x, y, loss_fn)
    raise ValueError(f"method must be 'auto', 'gauss-newton' or 'hvp', got {method!r}")
