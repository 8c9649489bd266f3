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

:func:`choose_implementation` is the rule (on devices other than the CPU the default is decided by
measurement: :mod:`hessian_lr.optim.autotune`), :func:`grad_diff_` the dispatcher, and
:func:`first_nonfinite` and :func:`refill_prev_grads_` the finiteness check before and the copy
of ``g_t`` after it. All of them work in place and allocate no
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
    "Hyper",
    "bias_correction",
    "single_tensor_grad_diff_",
    "foreach_grad_diff_",
    "compiled_grad_diff_",
    "choose_implementation",
    "compiled_error",
    "grad_diff_",
    "refill_prev_grads_",
    "first_nonfinite",
]


class Implementation(str, enum.Enum):
    """How :func:`grad_diff_` runs for a tensor (see the module docstring)."""

    KERNEL = "kernel"
    COMPILED = "compiled"
    FOREACH = "foreach"
    FOR_LOOP = "for-loop"
    # Not runnable: "measure COMPILED against FOREACH on the device first" (hessian_lr.optim.autotune).
    AUTOTUNE = "autotune"


Hyper = tuple[float, float, int]  # (beta, eps, step t): one row of hyperparameters


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
    table: Tensor,
    rows: tuple[int, ...],
    into_prev: tuple[bool, ...],
) -> None:
    """The update written for ``torch.compile``: ``table[rows[i]] = (beta, eps, scale)`` of tensor
    ``i`` (a tensor, so new step counts reuse the compiled code), no scratch reuse (the compiler
    fuses each tensor's ops into one loop that reads ``g, g_prev, h`` once)."""
    for grad, prev, h, row, into in zip(grads, prev_grads, hs, rows, into_prev):
        beta, eps, scale = table[row, 0], table[row, 1], table[row, 2]
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
    rows: Sequence[int],
    hyper: Sequence[Hyper],
    into_prev: Sequence[bool],
) -> None:
    """The grad-diff update of every tensor in one ``torch.compile``-d call per device; tensor
    ``i`` uses the hyperparameters ``hyper[rows[i]]``. Runs on any device torch.compile generates
    code for.

    Compiled on first use for each set of tensor shapes (inductor: C++ on CPU, Triton on CUDA;
    seconds for a few tensors, a minute or more for hundreds; cached on disk by inductor). Shapes
    are static, which keeps the per-call overhead low; dynamo's recompile limit (8) bounds how many
    distinct parameter sets one process compiles before it runs them eagerly. If compilation fails
    (no compiler, no Triton) it warns once and this process uses the eager ops instead.
    """
    global _compiled, _compiled_error
    by_device: dict[torch.device, list[int]] = {}
    for i, g in enumerate(grads):
        by_device.setdefault(g.device, []).append(i)
    table_rows = [(beta, eps, 1.0 / bias_correction(beta, step)) for beta, eps, step in hyper]
    for device, members in by_device.items():
        sub = (
            [grads[i] for i in members], [prev_grads[i] for i in members], [hs[i] for i in members],
            [rows[i] for i in members], [into_prev[i] for i in members],
        )
        if _compiled_error is None:
            if _compiled is None:
                _compiled = torch.compile(_grad_diff_lists, dynamic=False, fullgraph=True)
            # The hyperparameters in the widest state dtype: a float64 table would make the
            # compiler convert them in float32 loops (~35% slower on CPU).
            wide = any(prev_grads[i].dtype == torch.float64 for i in members)
            table = torch.tensor(table_rows, dtype=torch.float64 if wide else torch.float32).to(device, non_blocking=True)
            try:
                _compiled(sub[0], sub[1], sub[2], table, tuple(sub[3]), tuple(sub[4]))
                continue
            except Exception as exc:  # noqa: BLE001 - narrowed below
                if not type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
                    raise  # not a compilation failure (those happen before any tensor is written)
                _compiled_error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                warnings.warn(
                    f"hessian_lr: torch.compile of the grad-diff step failed ({_compiled_error}); "
                    "using eager _foreach_ ops",
                    stacklevel=3,
                )
        _eager_grad_diff_(*sub, hyper, foreach=True)


def compiled_error() -> str | None:
    """Why ``torch.compile`` of the grad-diff step failed in this process (it then runs the eager
    ops), or None."""
    return _compiled_error


def choose_implementation(
    device_type: str, *, fused: bool | None, foreach: bool | None, kernel: ModuleType | None
) -> Implementation:
    """The implementation :func:`grad_diff_` uses for a tensor on ``device_type`` (a DTensor's
    local device).

    Args:
        device_type: ``"cpu"``, ``"cuda"``, ...
        fused: as in ``HessianLRAdaptation``: ``True`` asks for one pass over memory everywhere
            (the C++ kernel on CPU, ``torch.compile`` elsewhere or when the kernel is missing);
            ``None`` (default) the fastest: the kernel on CPU where it is loaded (else the eager
            ops), and on other devices whichever of the compiled function and the eager ops is
            measured faster (:data:`Implementation.AUTOTUNE`, resolved by
            :func:`hessian_lr.optim.autotune.fastest`); ``False`` the eager ops only.
        foreach: ``True`` pins the eager ``_foreach_`` ops where ``fused`` is None (nothing is
            measured), ``False`` the eager ops one tensor at a time.
        kernel: the loaded C++ kernel module, or None.

    Returns:
        The implementation, or ``AUTOTUNE`` for "measure first".
    """
    if fused is not False and kernel is not None and device_type == "cpu":
        return Implementation.KERNEL
    if fused:
        return Implementation.COMPILED
    if foreach is False:
        return Implementation.FOR_LOOP
    if fused is None and foreach is None and device_type != "cpu":
        return Implementation.AUTOTUNE
    return Implementation.FOREACH


def grad_diff_(
    grads: list[Tensor],
    prev_grads: list[Tensor],
    hs: list[Tensor],
    *,
    rows: Sequence[int],
    hyper: Sequence[Hyper],
    into_prev: Sequence[bool],
    implementations: Sequence[Implementation],
    kernel: ModuleType | None = None,
) -> None:
    """The grad-diff update of every tensor, each with its own hyperparameters and implementation.

    Tensor ``i`` uses ``hyper[rows[i]] = (beta, eps, step)`` and ``implementations[i]`` (normally
    from :func:`choose_implementation`); ``into_prev[i]`` says where its rescaled gradient goes.
    Tensors of one implementation are handled together: one kernel call, one compiled call per
    device, one ``_foreach_`` chain per batch sharing a row, ``into_prev``, device and dtype.
    """
    by_impl: dict[Implementation, list[int]] = {}
    for i, impl in enumerate(implementations):
        by_impl.setdefault(impl, []).append(i)
    for impl, members in by_impl.items():
        if len(members) == len(grads):
            g, p, h, r, into = grads, prev_grads, hs, list(rows), list(into_prev)
        else:
            g, p, h = [grads[i] for i in members], [prev_grads[i] for i in members], [hs[i] for i in members]
            r, into = [rows[i] for i in members], [into_prev[i] for i in members]
        if impl is Implementation.AUTOTUNE:
            raise ValueError("grad_diff_: resolve Implementation.AUTOTUNE first (hessian_lr.optim.autotune.fastest)")
        if impl is Implementation.KERNEL:
            if kernel is None:
                raise ValueError("grad_diff_: the kernel implementation needs the kernel module")
            betas, epss, scales = zip(*((b, e, 1.0 / bias_correction(b, t)) for b, e, t in hyper))
            kernel.grad_diff_(g, p, h, r, list(betas), list(epss), list(scales), into)
        elif impl is Implementation.COMPILED:
            compiled_grad_diff_(g, p, h, rows=r, hyper=hyper, into_prev=into)
        else:
            _eager_grad_diff_(g, p, h, r, into, hyper, foreach=impl is Implementation.FOREACH)


def _eager_grad_diff_(grads, prev_grads, hs, rows, into_prev, hyper, *, foreach: bool) -> None:
    """Eager ops: ``_foreach_`` chains over batches sharing a row, ``into_prev``, device and
    dtype, else one tensor at a time."""
    batches: dict[tuple, list[int]] = {}
    for i, (g, p, h) in enumerate(zip(grads, prev_grads, hs)):
        same = g.dtype == p.dtype == h.dtype and g.device == p.device == h.device
        batches.setdefault((rows[i], into_prev[i], g.device if same and foreach else i), []).append(i)
    for (row, into, _), members in batches.items():
        beta, eps, step = hyper[row]
        if len(members) > 1:
            foreach_grad_diff_(
                [grads[i] for i in members], [prev_grads[i] for i in members], [hs[i] for i in members],
                beta=beta, eps=eps, step=step, into_prev=into,
            )
        else:
            i = members[0]
            single_tensor_grad_diff_(grads[i], prev_grads[i], hs[i], beta=beta, eps=eps, step=step, into_prev=into)


def refill_prev_grads_(prev_grads: list[Tensor], grads: list[Tensor], *, kernel: ModuleType | None = None) -> None:
    """``prev_grad <- grad`` for every pair, after the base step of an ``into_prev`` update: the
    kernel's one ``memcpy`` per tensor where it is loaded and all are CPU tensors, else
    ``_foreach_copy_`` (one fused copy on CUDA)."""
    if kernel is not None and all(g.device.type == "cpu" for g in grads):
        kernel.copy_(prev_grads, grads)
    else:
        torch._foreach_copy_(prev_grads, grads)


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
