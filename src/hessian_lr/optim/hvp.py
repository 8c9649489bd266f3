"""Second-order samples for the curvature estimators that need more than the plain gradient.

Two samplers, each a plain function of a loss (or logits) and a list of parameters:

* :func:`hutchinson_sample` — the gradient *and* ``z * (H z)`` for Rademacher ``z`` from one
  backward with ``create_graph=True`` plus one Hessian-vector product per probe. The graph is
  freed before the function returns (the last product runs without ``retain_graph``, and the
  returned gradients are detached), so nothing leaks into the next step — the failure mode of
  many Hessian-vector-product optimizers.
* :func:`gauss_newton_bartlett_sample` — Sophia-G's estimate ``B * ghat**2`` where ``ghat`` is
  the gradient of the mean cross-entropy against labels *sampled from the model's own softmax*.

:func:`accumulate_grads_` stores gradients into ``p.grad`` the way ``loss.backward()`` would
(add when a gradient is already there). No Optuna, no matplotlib: torch only.

Complex parameters are treated as their real views (``torch.view_as_real``), as torch's optimizers
do: probes are drawn for the real coordinates and samples come back real, shaped ``(*shape, 2)`` --
exactly what the same model written with real parameters of that shape gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
from torch import Tensor

__all__ = ["rademacher_like", "hutchinson_sample", "gauss_newton_bartlett_sample", "accumulate_grads_"]


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def rademacher_like(t: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A tensor of independent ±1 entries with ``t``'s shape, dtype and device (for a complex
    ``t``: ±1 in each real coordinate, the draws a real tensor of its real view's shape gets)."""
    real = _real(t)
    bits = torch.randint(0, 2, real.shape, generator=generator, device=t.device, dtype=torch.int8)
    probe = bits.to(real.dtype).mul_(2).sub_(1)
    return torch.view_as_complex(probe) if t.is_complex() else probe


def hutchinson_sample(
    loss: Tensor,
    params: Sequence[Tensor],
    *,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[list[Tensor | None], list[Tensor | None]]:
    r"""``(grads, samples)`` with ``samples[i]`` the mean over ``n_samples`` probes of ``z ⊙ (H z)``.

    ``E[z ⊙ (H z)] = diag(H)`` for Rademacher ``z`` (each entry ±1 with probability 1/2); the
    variance of entry ``i`` is ``Σ_{j≠i} H_ij²`` per probe. Only within-tensor blocks of ``H`` are
    probed — each tensor gets its own ``z`` and its product ``H_ii z_i`` — which has the same
    expectation and no cross-tensor variance. Cost: one backward with ``create_graph=True`` and
    one double-backward per probe (roughly 2–3× a plain backward for one probe).

    ``grads[i]`` is the detached gradient (``None`` where ``loss`` does not depend on
    ``params[i]``); a parameter whose gradient does not depend on the parameters (the loss is
    linear in it) gets a zero sample. The autograd graph is released before returning.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    params = list(params)
    with torch.enable_grad():
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        curved = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        sums: list[Tensor | None] = [torch.zeros_like(_real(g)) if g is not None else None for g in grads]
        for k in range(n_samples):
            if not curved:
                break
            zs = [rademacher_like(params[i], generator) for i in curved]
            hzs = torch.autograd.grad(
                [grads[i] for i in curved],
                [params[i] for i in curved],
                grad_outputs=zs,
                retain_graph=k < n_samples - 1,
                allow_unused=True,
            )
            for i, z, hz in zip(curved, zs, hzs):
                if hz is not None:
                    sums[i].addcmul_(_real(z), _real(hz.detach()))  # type: ignore[union-attr]
    detached = [g.detach() if g is not None else None for g in grads]
    del grads  # the last reference to the double-backward graph
    samples = [s.div_(n_samples) if s is not None else None for s in sums]
    return detached, samples


def gauss_newton_bartlett_sample(
    logits: Tensor,
    params: Sequence[Tensor],
    *,
    generator: torch.Generator | None = None,
    retain_graph: bool = False,
) -> list[Tensor | None]:
    r"""Sophia-G's Gauss–Newton–Bartlett diagonal sample ``B · ĝ ⊙ ĝ`` for a softmax likelihood.

    With ``p_b = softmax(logits_b)`` and ``ŷ_b ~ Categorical(p_b)`` drawn independently,
    ``ĝ = ∇_θ (1/B) Σ_b CE(logits_b, ŷ_b)``. Because ``E_ŷ[∇ℓ ∇ℓᵀ] = diag(p) − p pᵀ`` is the
    cross-entropy Hessian in the logits (Bartlett's identity) and the cross terms between
    samples have mean zero, ``E[B ĝ²]`` is the diagonal of the Gauss–Newton matrix
    ``(1/B) Σ_b J_bᵀ (diag p_b − p_b p_bᵀ) J_b`` of the mean cross-entropy. Logits of any rank
    are flattened to ``(B, classes)`` (classes last). Cost: one extra backward through the
    graph that produced ``logits`` (pass ``retain_graph=True`` if the graph is used again).
    Non-finite logits give all-NaN samples (nothing to sample from; callers drop them).
    """
    flat = logits.reshape(-1, logits.shape[-1])
    with torch.no_grad():
        probs = torch.softmax(flat.detach().float(), dim=-1)
        if not bool(probs.isfinite().all()):  # diverged: no labels to sample; NaN marks the sample bad
            return [torch.full_like(_real(p), math.nan) for p in params]
        sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    with torch.enable_grad():
        sampled_loss = nnf.cross_entropy(flat, sampled)
        ghat = torch.autograd.grad(sampled_loss, list(params), retain_graph=retain_graph, allow_unused=True)
    batch = flat.shape[0]
    return [_real(g.detach()).square().mul_(batch) if g is not None else None for g in ghat]


def accumulate_grads_(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """Store ``grads`` into ``p.grad`` as ``backward()`` would: assign if empty, else add."""
    for p, g in zip(params, grads):
        if g is None:
            continue
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)
