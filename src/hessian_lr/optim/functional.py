"""The wrapper's grad-diff math as plain functions of tensors, and the one place that picks an
implementation for it (like torch's ``adam()`` picking ``_fused_adam`` / ``_multi_tensor_adam`` /
``_single_tensor_adam``).

Notation for one parameter tensor at step ``t`` (``t = 1, 2, ...``)::

    d_t     = g_t - g_{t-1}                 (g_0 := 0, so d_1 = g_1)
    h_t     = beta * h_{t-1} + (1 - beta) * d_t**2          (h_0 := 0)
    hhat_t  = h_t / (1 - beta**t)                           (bias correction)
    g~_t    = g_t / sqrt(hhat_t + eps)                      (eps inside the square root)

Where the rescaled gradient ``g~_t`` goes:

* **in place** (``into_prev=False``): ``grad`` becomes ``g~_t`` and ``prev_grad`` a copy of ``g_t``;
* **into prev** (``into_prev=True``, same dtypes): ``prev_grad``'s buffer receives ``g~_t`` and
  ``grad`` is only read. The caller uses that buffer as the gradient the base optimizer sees and
  afterwards copies ``g_t`` back into it (``prev_grad.copy_(grad)``) -- this is how
  ``HessianLRAdaptation.step()`` leaves ``p.grad`` untouched without any extra memory.

Four implementations, identical in meaning:

=================  ==============================================================================
``kernel``         the compiled C++ extension (:mod:`hessian_lr.optim.kernel`): CPU tensors, one
                   pass over memory, bit-identical to ``for-loop``
``compiled``       :func:`compiled_grad_diff_`, one ``torch.compile``-d function over all tensors:
                   any device, one pass per tensor; float-tolerance agreement (the compiler picks
                   its own fused multiply-adds)
``foreach``        :func:`foreach_grad_diff_`, eager ``_foreach_`` ops (~10 passes), bit-identical
``for-loop``       :func:`single_tensor_grad_diff_`, the readable reference
=================  ==============================================================================

:func:`choose_implementation` is the rule, :func:`grad_diff_` the dispatcher and
:func:`first_nonfinite` the matching finiteness check. All of them work in place and allocate no
model-sized temporaries.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType

import torch
from torch import Tensor

__all__ = [
    "Implementation",
    "bias_correction",
    "single_tensor_grad_diff_",
    "foreach_grad_diff_",
    "compiled_grad_diff_",
    "choose_implementation",
    "grad_diff_",
    "first_nonfinite",
]


class Implementation(str, enum.Enum):
    """How :func:`grad_diff_` runs for a tensor (see the module docstring)."""

    KERNEL = "kernel"
    COMPILED = "compiled"
    FOREACH = "foreach"
    FOR_LOOP = "for-loop"


def bias_correction(beta: float, step: int) -> float:
    """``1 - beta**step``: the weight an EMA started at zero has accumulated after ``step`` updates."""
    return 1.0 - beta**step


def single_tensor_grad_diff_(
    grad: Tensor, prev_grad: Tensor, h: Tensor, *, beta: float, eps: float, step: int, into_prev: bool = False
) -> None:
    """One grad-diff update of ``h`` and ``prev_grad``; the rescaled gradient goes into ``grad``
    (default) or, with ``into_prev=True``, into ``prev_grad`` (``grad`` unchanged; see the module
    docstring).

    ``step`` is the 1-based index of this update. ``h`` and ``prev_grad`` may be in a wider dtype
    than ``grad`` (e.g. float32 state for bfloat16 parameters; in place only); arithmetic then
    happens in the state's dtype and only the final scaled gradient is rounded to ``grad``'s dtype.
    """
    prev_grad.sub_(grad)  # prev_grad now holds -d_t; the sign vanishes in the square
    h.mul_(beta).addcmul_(prev_grad, prev_grad, value=1.0 - beta)
    scale = 1.0 / bias_correction(beta, step)
    # rescaled <- g_t / sqrt(h * scale + eps), computed in the state's precision.
    if into_prev:
        torch.mul(h, scale, out=prev_grad)
        prev_grad.add_(eps).rsqrt_().mul_(grad)
        return
    prev_grad.copy_(grad)  # a copy, never an alias: later in-place edits of p.grad can't reach it
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
    into_prev: bool = False,
) -> None:
    """The multi-tensor form of :func:`single_tensor_grad_diff_` (all tensors share ``step``).

    Requires every ``grad`` to have the same dtype as its state tensors; :func:`grad_diff_` routes
    mixed dtypes through the single-tensor form.
    """
    if not grads:
        return
    torch._foreach_sub_(prev_grads, grads)
    torch._foreach_mul_(hs, beta)
    torch._foreach_addcmul_(hs, prev_grads, prev_grads, value=1.0 - beta)
    out, other = (prev_grads, grads) if into_prev else (grads, prev_grads)
    if not into_prev:
        torch._foreach_copy_(prev_grads, grads)
    torch._foreach_copy_(out, hs)
    torch._foreach_mul_(out, 1.0 / bias_correction(beta, step))
    torch._foreach_add_(out, eps)
    torch._foreach_rsqrt_(out)
    torch._foreach_mul_(out, other)


def _grad_diff_lists(
    grads: list[Tensor],
    prev_grads: list[Tensor],
    hs: list[Tensor],
    betas: list[float],
    epss: list[float],
    scales: list[float],
    into_prev: tuple[bool, ...],
) -> None:
    """The update written for ``torch.compile``: per-tensor hyperparameters, no scratch reuse (the
    compiler fuses each tensor's ops into one loop that reads ``g, g_prev, h`` once)."""
    for grad, prev, h, beta, eps, scale, into in zip(grads, prev_grads, hs, betas, epss, scales, into_prev):
        g = grad.to(prev.dtype)
        neg_d = prev - g
        h_new = h * beta + neg_d * neg_d * (1.0 - beta)
        h.copy_(h_new)
        rescaled = torch.rsqrt(h_new * scale + eps) * g
        if into:
            prev.copy_(rescaled)
        else:
            prev.copy_(g)
            grad.copy_(rescaled)


_compiled: Callable[..., None] | None = None
_compiled_error: str | None = None  # why torch.compile is unusable here, once it failed


def compiled_grad_diff_(
    grads: list[Tensor],
    prev_grads: list[Tensor],
    hs: list[Tensor],
    *,
    betas: Sequence[float],
    epss: Sequence[float],
    steps: Sequence[int],
    into_prev: Sequence[bool],
) -> None:
    """The grad-diff update of every tensor in one ``torch.compile``-d call (per-tensor
    hyperparameters), on any device torch.compile generates code for.

    Compiled on first use (inductor: C++ on CPU, Triton on CUDA; seconds to a minute, cached on
    disk by inductor), with dynamic shapes and symbolic floats, so new step counts and most new
    parameter shapes reuse the compiled code. If compilation fails (no compiler, no Triton) it warns
    once and this process uses :func:`foreach_grad_diff_` instead.
    """
    global _compiled, _compiled_error
    scales = [1.0 / bias_correction(b, t) for b, t in zip(betas, steps)]
    if _compiled_error is None:
        first_call = _compiled is None
        if first_call:
            _compiled = torch.compile(_grad_diff_lists, dynamic=True, fullgraph=True)
        try:
            _compiled(grads, prev_grads, hs, list(betas), list(epss), scales, tuple(into_prev))
            return
        except Exception as exc:  # noqa: BLE001 - compilation happens before any tensor is written
            if not first_call:
                raise
            _compiled_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            warnings.warn(
                f"hessian_lr: torch.compile of the grad-diff step failed ({_compiled_error}); "
                "using eager _foreach_ ops",
                stacklevel=3,
            )
    _eager_grad_diff_(grads, prev_grads, hs, betas, epss, steps, into_prev, foreach=True)


def choose_implementation(
    device_type: str, *, fused: bool | None, foreach: bool | None, kernel: ModuleType | None
) -> Implementation:
    """The implementation :func:`grad_diff_` uses for a tensor on ``device_type`` (a DTensor's
    local device).

    ``fused`` as in ``HessianLRAdaptation``: ``True`` asks for one pass over memory everywhere (the
    C++ kernel on CPU, ``torch.compile`` elsewhere or when the kernel is missing); ``None`` uses the
    kernel where it is loaded and the eager ops elsewhere (nothing gets compiled); ``False`` uses
    the eager ops only. ``foreach=False`` makes the eager ops one tensor at a time.
    """
    if fused is not False and kernel is not None and device_type == "cpu":
        return Implementation.KERNEL
    if fused:
        return Implementation.COMPILED
    return Implementation.FOR_LOOP if foreach is False else Implementation.FOREACH


def grad_diff_(
    grads: list[Tensor],
    prev_grads: list[Tensor],
    hs: list[Tensor],
    *,
    betas: Sequence[float],
    epss: Sequence[float],
    steps: Sequence[int],
    into_prev: Sequence[bool],
    implementations: Sequence[Implementation],
    kernel: ModuleType | None = None,
) -> None:
    """The grad-diff update of every tensor, each with its own hyperparameters and implementation.

    All sequences are per tensor (``implementations[i]`` normally from :func:`choose_implementation`).
    Tensors of one implementation are handled together: one kernel call, one compiled call, one
    ``_foreach_`` chain per (hyperparameters, ``into_prev``) batch of same-dtype tensors.
    """
    by_impl: dict[Implementation, list[int]] = {}
    for i, impl in enumerate(implementations):
        by_impl.setdefault(impl, []).append(i)
    for impl, members in by_impl.items():
        everyone = len(members) == len(grads)

        def pick(values: Sequence, members: list[int] = members, everyone: bool = everyone) -> list:
            return list(values) if everyone else [values[i] for i in members]

        g, p, h = pick(grads), pick(prev_grads), pick(hs)
        b, e, t, into = pick(betas), pick(epss), pick(steps), pick(into_prev)
        if impl is Implementation.KERNEL:
            if kernel is None:
                raise ValueError("grad_diff_: the kernel implementation needs the kernel module")
            scales = [1.0 / bias_correction(beta, step) for beta, step in zip(b, t)]
            kernel.grad_diff_(g, p, h, list(range(len(g))), b, e, scales, into)
        elif impl is Implementation.COMPILED:
            compiled_grad_diff_(g, p, h, betas=b, epss=e, steps=t, into_prev=into)
        else:
            _eager_grad_diff_(g, p, h, b, e, t, into, foreach=impl is Implementation.FOREACH)


def _eager_grad_diff_(grads, prev_grads, hs, betas, epss, steps, into_prev, *, foreach: bool) -> None:
    """Eager ops: ``_foreach_`` chains over batches sharing hyperparameters and dtypes, else one
    tensor at a time."""
    batches: dict[tuple, list[int]] = {}
    for i, (g, p, h) in enumerate(zip(grads, prev_grads, hs)):
        same = g.dtype == p.dtype == h.dtype and g.device == p.device == h.device
        key = (betas[i], epss[i], steps[i], into_prev[i], g.device if same and foreach else i)
        batches.setdefault(key, []).append(i)
    for (beta, eps, step, into, _), members in batches.items():
        if len(members) > 1:
            foreach_grad_diff_(
                [grads[i] for i in members], [prev_grads[i] for i in members], [hs[i] for i in members],
                beta=beta, eps=eps, step=step, into_prev=into,
            )
        else:
            i = members[0]
            single_tensor_grad_diff_(grads[i], prev_grads[i], hs[i], beta=beta, eps=eps, step=step, into_prev=into)


def first_nonfinite(grads: Sequence[Tensor], *, kernel: ModuleType | None = None) -> int | None:
    """Index of the first gradient holding inf/NaN, or None.

    CPU tensors go to the kernel's exponent-bit check when it is loaded (one read each). Others:
    one ``_foreach_norm`` (the 2-norm: a fast vectorized pass, unlike the max-norm) flags
    candidates; a 2-norm can overflow for huge finite values, so candidates are confirmed with an
    exact ``isfinite`` before anything is reported.
    """
    if kernel is not None and all(g.device.type == "cpu" for g in grads):
        index = kernel.first_nonfinite(list(grads))
        return None if index < 0 else index
    norms = torch._foreach_norm(list(grads), 2)
    if len({(n.dtype, n.device) for n in norms}) > 1:
        norms = [n.float().cpu() for n in norms]
    if not norms or bool(torch.stack(norms).isfinite().all()):
        return None
    for i, n in enumerate(norms):
        if not bool(n.isfinite()) and not bool(grads[i].isfinite().all()):
            return i
    return None
