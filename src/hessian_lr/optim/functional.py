"""The wrapper's math as plain functions of tensors, callable without a model or an optimizer.

Notation for one parameter tensor at step ``t`` (``t = 1, 2, ...``)::

    d_t     = g_t - g_{t-1}                 (g_0 := 0, so d_1 = g_1)
    h_t     = beta * h_{t-1} + (1 - beta) * d_t**2          (h_0 := 0)
    hhat_t  = h_t / (1 - beta**t)                           (bias correction)
    g~_t    = g_t / sqrt(hhat_t + eps)                      (eps inside the square root)

``single_tensor_grad_diff_`` is the readable reference; ``foreach_grad_diff_`` is the
multi-tensor path over lists of tensors and must agree with the reference (tests check it).
Both work in place and allocate no model-sized temporaries: ``prev_grad`` is first used as
scratch for ``-d_t``, then receives the copy of ``g_t``; ``grad`` is then rebuilt as
``rsqrt(hhat_t + eps) * g_t`` from that copy.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bias_correction", "single_tensor_grad_diff_", "foreach_grad_diff_"]


def bias_correction(beta: float, step: int) -> float:
    """``1 - beta**step``: the weight an EMA started at zero has accumulated after ``step`` updates."""
    return 1.0 - beta**step


def single_tensor_grad_diff_(
    grad: Tensor, prev_grad: Tensor, h: Tensor, *, beta: float, eps: float, step: int
) -> None:
    """One grad-diff update of ``h`` and ``prev_grad`` and the in-place rescaling of ``grad``.

    ``step`` is the 1-based index of this update. ``h`` and ``prev_grad`` may be in a wider
    dtype than ``grad`` (e.g. float32 state for bfloat16 parameters); arithmetic then happens
    in the state's dtype and only the final scaled gradient is rounded to ``grad``'s dtype.
    """
    prev_grad.sub_(grad)  # prev_grad now holds -d_t; the sign vanishes in the square
    h.mul_(beta).addcmul_(prev_grad, prev_grad, value=1.0 - beta)
    prev_grad.copy_(grad)  # a copy, never an alias: later in-place edits of p.grad can't reach it
    scale = 1.0 / bias_correction(beta, step)
    # grad <- g_t / sqrt(h * scale + eps), computed in the state's precision.
    if grad.dtype == h.dtype:
        torch.mul(h, scale, out=grad)
        grad.add_(eps).rsqrt_().mul_(prev_grad)
    else:
        # Low-precision gradient with wider state: one temporary so the rounding happens once.
        grad.copy_(h.mul(scale).add_(eps).rsqrt_().mul_(prev_grad))


def foreach_grad_diff_(
    grads: list[Tensor],
    prev_grads: list[Tensor],
    hs: list[Tensor],
    *,
    beta: float,
    eps: float,
    step: int,
) -> None:
    """The multi-tensor form of :func:`single_tensor_grad_diff_` (all tensors share ``step``).

    Requires every ``grad`` to have the same dtype as its state tensors; callers route mixed
    dtypes through the single-tensor path.
    """
    if not grads:
        return
    torch._foreach_sub_(prev_grads, grads)
    torch._foreach_mul_(hs, beta)
    torch._foreach_addcmul_(hs, prev_grads, prev_grads, value=1.0 - beta)
    torch._foreach_copy_(prev_grads, grads)
    scale = 1.0 / bias_correction(beta, step)
    torch._foreach_copy_(grads, hs)
    torch._foreach_mul_(grads, scale)
    torch._foreach_add_(grads, eps)
    torch._foreach_rsqrt_(grads)
    torch._foreach_mul_(grads, prev_grads)
