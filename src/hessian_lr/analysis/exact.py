"""The exact Hessian diagonal of a loss with respect to every parameter of a small model.

Two routes, checked against ``torch.autograd.functional.hessian`` in the tests:

* :func:`hessian_diagonal_hvp` — any differentiable loss: one backward with ``create_graph=True``
  and then, per parameter tensor, Hessian-vector products with blocks of unit vectors
  (``is_grads_batched``), reading the diagonal of each block. ``numel / block_size``
  double-backwards per tensor: fine for a few thousand parameters, ~seconds for the
  15k-parameter MLP.
* :func:`gauss_newton_diagonal_ce` — the diagonal of the Gauss–Newton matrix of the mean
  cross-entropy, ``(1/N) Σ_n J_nᵀ (diag p_n − p_n p_nᵀ) J_n``, computed exactly by factoring
  ``diag p − p pᵀ = U U ᵀ`` with ``U[:, c] = √p_c (e_c − p)`` and summing squared per-sample
  vector-Jacobian products (``torch.func.vmap``). For a network in which each layer's parameters
  enter the logits piecewise linearly (Linear/Conv layers joined by ReLU-like activations and
  max/avg pooling) the second derivative of the logits with respect to a single weight is zero
  almost everywhere, so this *is* the exact Hessian diagonal. :func:`exact_hessian_diagonal`
  picks it for such models and falls back to Hessian-vector products otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "hessian_diagonal_hvp",
    "gauss_newton_diagonal_ce",
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


def hessian_diagonal_hvp(
    loss_fn: Callable[[], Tensor], params: Sequence[Tensor], *, block_size: int = 256
) -> list[Tensor]:
    """Exact ``diag(∇²L)`` for every tensor in ``params`` by Hessian-vector products.

    ``loss_fn()`` builds the scalar loss (called once). Only the within-tensor block of the
    Hessian is probed, which holds the whole diagonal.
    """
    params = list(params)
    with torch.enable_grad():
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        diagonals = []
        for p, g in zip(params, grads):
            diag = torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
            if g is not None and g.requires_grad:
                flat = g.reshape(-1)
                for start in range(0, p.numel(), block_size):
                    stop = min(start + block_size, p.numel())
                    idx = torch.arange(start, stop, device=p.device)
                    units = torch.zeros(stop - start, p.numel(), dtype=p.dtype, device=p.device)
                    units[torch.arange(stop - start), idx] = 1.0
                    (rows,) = torch.autograd.grad(
                        flat, p, grad_outputs=units, retain_graph=True, is_grads_batched=True, allow_unused=True
                    )
                    if rows is not None:
                        diag[start:stop] = rows.reshape(stop - start, -1)[torch.arange(stop - start), idx]
            diagonals.append(diag.reshape(p.shape).detach())
    del grads
    return diagonals


def gauss_newton_diagonal_ce(
    model: nn.Module, x: Tensor, y: Tensor | None = None, *, chunk_size: int = 256
) -> list[Tensor]:
    """Diagonal of the Gauss–Newton matrix of ``mean CE(model(x), ·)``, one tensor per parameter.

    Independent of the labels ``y`` (accepted for symmetry with the loss). Returned in the order of
    ``[p for p in model.parameters() if p.requires_grad]``. The model should be in eval mode
    (per-sample evaluation, no batch statistics).
    """
    if all(isinstance(m, (nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Sequential, nn.Identity, nn.Flatten, nn.Dropout))
           for m in model.modules()):
        return _gauss_newton_diagonal_linear(model, x, chunk_size=max(chunk_size, 1024))
    return _gauss_newton_diagonal_vmap(model, x, chunk_size=chunk_size)


def _class_factors(logits: Tensor) -> Tensor:
    """``u[n, c, :] = sqrt(p_c) (e_c − p)``, so that ``Σ_c u_c u_cᵀ = diag p − p pᵀ`` per row."""
    probs = torch.softmax(logits, dim=-1)
    eye = torch.eye(probs.shape[-1], dtype=probs.dtype, device=probs.device)
    return probs.sqrt().unsqueeze(-1) * (eye.unsqueeze(0) - probs.unsqueeze(1))


def _gauss_newton_diagonal_linear(model: nn.Module, x: Tensor, *, chunk_size: int) -> list[Tensor]:
    """Fast exact form for MLPs: per-sample Linear gradients are ``δ aᵀ``, so the sum of their
    squares over samples is ``(δ²)ᵀ (a²)`` — one backward per class, no per-sample tensors."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    params = [p for p in model.parameters() if p.requires_grad]
    totals = {id(p): torch.zeros_like(p) for p in params}
    seen: dict[nn.Linear, tuple[Tensor, Tensor]] = {}

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        seen[module] = (inputs[0].detach(), output)

    handles = [m.register_forward_hook(hook) for m in linears]
    try:
        with torch.enable_grad():
            for start in range(0, x.shape[0], chunk_size):
                seen.clear()
                logits = model(x[start : start + chunk_size])
                u = _class_factors(logits.detach())
                outputs = [seen[m][1] for m in linears]
                for c in range(u.shape[1]):
                    deltas = torch.autograd.grad(logits, outputs, grad_outputs=u[:, c, :], retain_graph=True)
                    for m, delta in zip(linears, deltas):
                        inp = seen[m][0]
                        d2 = delta.square()
                        if m.weight.requires_grad:
                            totals[id(m.weight)] += d2.reshape(-1, d2.shape[-1]).T @ inp.square().reshape(-1, inp.shape[-1])
                        if m.bias is not None and m.bias.requires_grad:
                            totals[id(m.bias)] += d2.reshape(-1, d2.shape[-1]).sum(0)
                del logits, outputs
    finally:
        for h in handles:
            h.remove()
        seen.clear()
    return [totals[id(p)] / x.shape[0] for p in params]


def _gauss_newton_diagonal_vmap(model: nn.Module, x: Tensor, *, chunk_size: int) -> list[Tensor]:
    """General form: squared per-sample vector-Jacobian products with ``torch.func.vmap``."""
    from torch.func import functional_call, vjp, vmap

    named = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    totals = {k: torch.zeros_like(v) for k, v in named.items()}

    def per_sample(xi: Tensor, ui: Tensor) -> dict[str, Tensor]:
        def logits_of(pd: dict[str, Tensor]) -> Tensor:
            return functional_call(model, (pd, buffers), (xi.unsqueeze(0),)).squeeze(0)

        _, pullback = vjp(logits_of, named)
        (cotangents,) = vmap(pullback)(ui)  # one vector-Jacobian product per row of ui
        return {k: v.square().sum(0) for k, v in cotangents.items()}

    batched = vmap(per_sample)
    with torch.no_grad():
        logits = model(x)
    n = x.shape[0]
    for start in range(0, n, chunk_size):
        xs = x[start : start + chunk_size]
        u = _class_factors(logits[start : start + chunk_size])
        for k, v in batched(xs, u).items():
            totals[k] += v.sum(0)
    return [totals[k] / n for k in named]


def is_piecewise_linear(model: nn.Module) -> bool:
    """True when every submodule is in the whitelist where GN diagonal == Hessian diagonal."""
    return all(isinstance(m, _PIECEWISE_LINEAR) for m in model.modules())


def exact_hessian_diagonal(
    model: nn.Module, x: Tensor, y: Tensor, *, method: str = "auto", chunk_size: int = 256
) -> list[Tensor]:
    """Exact diagonal of the Hessian of ``mean cross_entropy(model(x), y)``, one tensor per parameter.

    ``method``: ``"gauss-newton"`` (exact only for piecewise-linear networks, milliseconds),
    ``"hvp"`` (any network, one double-backward per ``block_size`` coordinates) or ``"auto"``
    (gauss-newton when :func:`is_piecewise_linear`, else hvp).
    """
    if method == "auto":
        method = "gauss-newton" if is_piecewise_linear(model) else "hvp"
    if method == "gauss-newton":
        return gauss_newton_diagonal_ce(model, x, y, chunk_size=chunk_size)
    if method == "hvp":
        params = [p for p in model.parameters() if p.requires_grad]
        return hessian_diagonal_hvp(lambda: nn.functional.cross_entropy(model(x), y), params)
    raise ValueError(f"method must be 'auto', 'gauss-newton' or 'hvp', got {method!r}")
