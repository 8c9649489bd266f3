"""Which grad-diff implementation runs on an accelerator: the faster one, measured once per process.

On CPU the choice is fixed (the C++ kernel, else the eager ops). On CUDA (and any other device
``torch.compile`` generates code for) two implementations remain, and which one is faster depends
on the device and on the parameter set: the eager ``_foreach_`` ops launch ~10 multi-tensor kernels
and move ~26 parameter-sized streams through memory, the ``torch.compile``-d function launches one
fused kernel per tensor and moves 5. Large tensors favour the compiled function, many small ones
the foreach ops. So the wrapper measures instead of assuming: the first time a parameter set is
seen on a device (same shapes, dtypes and hyperparameter rows), :func:`fastest` runs both on
scratch tensors of those shapes -- the compiled one's first call compiles it, which is then reused
by the real steps -- times a few interleaved calls each, and keeps the one with the lower median.
The decision is cached for the rest of the process, so all models of one shape trained by a
process use the same implementation; ``fused=True`` / ``fused=False`` on the wrapper pin it.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from hessian_lr.optim import functional as F

__all__ = ["CANDIDATES", "pick_fastest", "fastest", "decisions", "clear"]

# In order of preference when measured equal: the eager ops compile nothing.
CANDIDATES = (F.Implementation.FOREACH, F.Implementation.COMPILED)
REPEATS = 7
# Scratch tensors for the measurement take at most this share of the device's free memory; a
# parameter set larger than that is measured on its leading tensors that fit.
MEMORY_SHARE = 0.25

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_decisions: dict[tuple, F.Implementation] = {}
_timings: dict[tuple, dict[str, float]] = {}


def pick_fastest(
    run: Callable[[F.Implementation], bool],
    candidates: Sequence[F.Implementation] = CANDIDATES,
    *,
    timer: Callable[[], float] = time.perf_counter,
    synchronize: Callable[[], None] = lambda: None,
    repeats: int = REPEATS,
) -> tuple[F.Implementation, dict[F.Implementation, float]]:
    """The candidate with the lowest median time of ``run(candidate)``.

    Args:
        run: runs one candidate once; returns False when the candidate cannot run as itself
            (e.g. ``torch.compile`` failed and it fell back to other ops): it is then left out.
        candidates: what to measure, in order of preference on equal medians.
        timer: a clock in seconds (injected by tests).
        synchronize: waits for the device's queued work (so the clock sees it finish).
        repeats: timed calls per candidate, interleaved, after one untimed warm-up call each
            (compilation, allocator, caches).

    Returns:
        The chosen candidate and every usable candidate's median seconds.
    """
    usable = [c for c in candidates if run(c)]  # the warm-up call
    if not usable:
        raise RuntimeError("no grad-diff implementation could run")
    times: dict[F.Implementation, list[float]] = {c: [] for c in usable}
    for _ in range(repeats):
        for candidate in usable:
            synchronize()
            start = timer()
            run(candidate)
            synchronize()
            times[candidate].append(timer() - start)
    medians = {c: statistics.median(t) for c, t in times.items()}
    best = min(usable, key=lambda c: (medians[c], usable.index(c)))
    return best, medians


def _signature(prevs: Sequence[Tensor], hs: Sequence[Tensor], grad_dtypes: Sequence[torch.dtype],
               rows: Sequence[int], n_rows: int, into_prev: Sequence[bool]) -> tuple:
    return (
        str(prevs[0].device), n_rows, tuple(rows), tuple(into_prev),
        tuple((tuple(p.shape), g, p.dtype, h.dtype) for p, h, g in zip(prevs, hs, grad_dtypes)),
    )


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cpu":
        return lambda: None
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: torch.accelerator.synchronize(device)  # torch >= 2.6


def _leading_that_fit(sizes: Sequence[int], device: torch.device) -> int:
    """How many leading tensors' scratch copies (three each) fit in MEMORY_SHARE of free memory."""
    if device.type != "cuda":
        return len(sizes)
    free, _ = torch.cuda.mem_get_info(device)
    budget, used = MEMORY_SHARE * free, 0
    for count, size in enumerate(sizes):
        used += 3 * size
        if used > budget:
            return max(count, 1)
    return len(sizes)


def fastest(
    prevs: Sequence[Tensor],
    hs: Sequence[Tensor],
    grad_dtypes: Sequence[torch.dtype],
    *,
    rows: Sequence[int],
    n_rows: int,
    into_prev: Sequence[bool],
    timer: Callable[[], float] = time.perf_counter,
) -> F.Implementation:
    """The faster implementation for these state tensors (all on one device), measured on
    scratch copies the first time this parameter set is seen in the process, then cached.

    Args:
        prevs, hs: the state tensors (``prev_grad``, ``h``) the update will run on; only their
            shapes, dtypes and device are used.
        grad_dtypes: each parameter's gradient dtype.
        rows, n_rows, into_prev: as the real :func:`hessian_lr.optim.functional.grad_diff_` call
            will pass them (they are part of what the compiled function is specialised on, so the
            measurement's compilation is the one the real steps reuse).
        timer: a clock in seconds.

    Returns:
        The implementation with the lower median time (ties: the eager ops).
    """
    key = _signature(prevs, hs, grad_dtypes, rows, n_rows, into_prev)
    with _lock:
        if key in _decisions:
            return _decisions[key]
        device = prevs[0].device
        sizes = [p.numel() * p.element_size() for p in prevs]
        n = _leading_that_fit(sizes, device)
        generator = torch.Generator(device=device).manual_seed(0)
        grads = [torch.randn(p.shape, generator=generator, device=device).to(g) for p, g in zip(prevs[:n], grad_dtypes)]
        scratch_prevs = [torch.randn(p.shape, generator=generator, device=device).to(p.dtype) for p in prevs[:n]]
        scratch_hs = [torch.rand(h.shape, generator=generator, device=device).to(h.dtype) for h in hs[:n]]
        hyper = [(0.99, 1e-8, 10)] * n_rows
        sub_rows, sub_into = list(rows[:n]), list(into_prev[:n])

        def run(impl: F.Implementation) -> bool:
            F.grad_diff_(grads, scratch_prevs, scratch_hs, rows=sub_rows, hyper=hyper, into_prev=sub_into,
                         implementations=[impl] * n)
            return impl is not F.Implementation.COMPILED or F.compiled_error() is None

        started = timer()
        best, medians = pick_fastest(run, CANDIDATES, timer=timer, synchronize=_synchronizer(device))
        _decisions[key] = best
        _timings[key] = {c.value: m for c, m in medians.items()}
        _log.info(
            "grad-diff step on %s (%d tensors%s): %s -> %s (measured in %.1f s, once per process)",
            device, len(prevs), "" if n == len(prevs) else f", measured on the first {n}",
            ", ".join(f"{c.value} {m * 1e3:.3f} ms" for c, m in medians.items()), best.value,
            timer() - started,
        )
        return best


def decisions() -> list[tuple[str, int, str, dict[str, float]]]:
    """What this process measured: ``(device, number of tensors, chosen implementation,
    median seconds per implementation)`` per parameter set, for benchmarks and reports."""
    return [(key[0], len(key[4]), impl.value, dict(_timings[key])) for key, impl in _decisions.items()]


def clear() -> None:
    """Forget every decision (the next wrapper step measures again)."""
    with _lock:
        _decisions.clear()
        _timings.clear()
