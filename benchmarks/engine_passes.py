"""What each model-sized pass of a batched step costs: a run with one pass removed at a time.

    .venv/bin/python benchmarks/engine_passes.py [--arms adam,hessian-adam] [--k 10] [--repeats 12]

A diagnostic for ``docs/engine.md``, not a mode of the engine: each variant below switches off one
pass of the batched training step (``StackedModels`` on mnist1d-mlp, K runs at K different lrs),
which makes the training wrong or unsafe, to see what the pass costs. Variants run interleaved,
``--repeats`` times each, best CPU time (``time.process_time``, one thread) kept; printed per
model-epoch and relative to the full step.

* ``no divergence check`` — the engine's read of the gradients for inf/NaN rows;
* ``no per-row lr`` — saving the parameters and scaling each row's change by its lr;
* ``no wrapper check`` — HessianLRAdaptation's non-finite check before it changes any state;
* ``no refill`` — the wrapper's copy of ``p.grad`` back into ``prev_grad`` after the base step.

The switches replace the functions by name; a renamed one fails here with an AttributeError.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from batched_training import benchmark_runs  # the same K runs (a script of this folder)
from hessian_lr.arms import get_arm
from hessian_lr.optim import wrapper
from hessian_lr.training import train
from hessian_lr.training.stacked import StackedModels
from hessian_lr.workloads import get_workload

# (owner, attribute, replacement) per variant; the wrapper ones only matter for wrapped arms.
VARIANTS: dict[str, list[tuple[object, str, Callable]]] = {
    "full step": [],
    "no divergence check": [(StackedModels, "_nonfinite_rows", lambda self, grads: None)],
    "no per-row lr": [(StackedModels, "_rescale_changes", lambda self: None)],
    "no wrapper check": [(wrapper.F, "first_nonfinite", lambda grads, kernel=None: None)],
    "no refill": [(wrapper.F, "refill_prev_grads_", lambda prevs, grads, kernel=None: None)],
}
WRAPPER_ONLY = {"no wrapper check", "no refill"}


def _switch(variant: str, originals: list[tuple[object, str, Callable]]) -> None:
    """Every function back to its original, then ``variant``'s replacements in."""
    for owner, name, function in originals + VARIANTS[variant]:
        setattr(owner, name, function)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default="adam,hessian-adam")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    originals = [(owner, name, getattr(owner, name)) for patches in VARIANTS.values() for owner, name, _ in patches]
    workload = get_workload("mnist1d-mlp")
    workload.data
    runs = benchmark_runs(args.k)
    print(f"mnist1d-mlp, K={args.k}, {args.epochs} epochs, 1 thread, best of {args.repeats}; CPU ms per model-epoch")
    for name in args.arms.split(","):
        arm = get_arm(name)
        wrapped = name.startswith("hessian-")
        variants = [v for v in VARIANTS if wrapped or v not in WRAPPER_ONLY]
        train(workload, arm, runs, epochs=1, evaluate_test=False)  # warm-up and the stacking probe
        best = dict.fromkeys(variants, float("inf"))
        try:
            for _ in range(args.repeats):
                for variant in variants:
                    _switch(variant, originals)
                    start = time.process_time()
                    train(workload, arm, runs, epochs=args.epochs, evaluate_test=False)
                    best[variant] = min(best[variant], (time.process_time() - start) / (args.k * args.epochs))
        finally:
            _switch("full step", originals)
        for variant in variants:
            print(f"{name:14s} {variant:20s} {1e3 * best[variant]:6.2f}  {best[variant] / best['full step']:5.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
