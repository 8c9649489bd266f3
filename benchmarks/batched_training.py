"""Per model-epoch time: K models at once vs one at a time, with every arm's own optimizer.

    .venv/bin/python benchmarks/batched_training.py [--k 10] [--epochs 3] [--repeats 3]
        [--arms adam,hessian-adam,adabelief,soap,muon] [--workload mnist1d-mlp]
        [--against COMMIT [--pairs 10]]

For each arm it times ``train(..., batch=False)`` (one model at a time, the nanoGPT-style
reference loop) and ``train(..., batch=True)`` (K stacked models: the arm's own optimizer, one
over the stack where the stacking probe allows, else one per model) on K runs with K different
lrs and seeds, alternating repeat by repeat and keeping the best of each (the machine is shared),
and prints milliseconds per model-epoch and the speed-up. All timings run on one intra-op thread and
count the process's CPU time (``time.process_time``), which other jobs on a shared machine
disturb far less than wall time (one thread: CPU time is the work done).

``--against COMMIT`` also compares this tree's batched engine with an earlier commit's (checked
out into a temporary git worktree), e.g. the commit before the engine took the arms' own
optimizers, whose hand-derived Adam/SGD update covered only adam, adamw, sgd and their grad-diff
wrappers. Both run the same harness, each K-model run in a fresh process (one warm-up epoch, then
the timed epochs), in ``--pairs`` alternating pairs: a long-lived process is not a fair place for
one side, since what ran in it before changes the heap and cache state a run finds (measured once:
this tree's batched adam ~5% slower after the one-at-a-time runs than before them). Printed: the
ratio of the two bests, and the median [min, max] of the per-pair ratios (neighbouring runs share
the machine's load), which on a shared machine spread over +-10%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# One K-model batched run in a fresh process, for this tree and for an earlier one alike: the
# engine before the arms' own optimizers (training/batched.py's train_batch) or today's train().
ENGINE_SNIPPET = """
import json, sys, time, torch
torch.set_num_threads(1)
torch.set_flush_denormal(True)  # what train() does: the same arithmetic conditions for both
from hessian_lr.workloads import get_workload
arm, lrs, epochs, workload = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
k = len(lrs)
w = get_workload(workload); w.data
try:
    from hessian_lr.training.batched import train_batch
    batched = lambda epochs: train_batch(w, arm, list(zip(lrs, range(k))), epochs=epochs, evaluate_test=False)
except ImportError:
    from hessian_lr.arms import get_arm
    from hessian_lr.training import Run, train
    runs = [Run({"lr": lr}, i) for i, lr in enumerate(lrs)]
    batched = lambda epochs: train(w, get_arm(arm), runs, epochs=epochs, evaluate_test=False)
batched(1)  # warm-up: imports, first allocations, this tree's stacking probe
start = time.process_time()
batched(epochs)
print(json.dumps((time.process_time() - start) / (k * epochs)))
"""


def _lrs(k: int) -> list[float]:
    """K lrs log-spaced over [10^-3.5, 10^-2] (run i has seed i)."""
    return [10 ** (-3.5 + 1.5 * i / max(k - 1, 1)) for i in range(k)]


def benchmark_runs(k: int):
    from hessian_lr.training import Run

    return [Run({"lr": lr}, i) for i, lr in enumerate(_lrs(k))]


def _engine_time(tree: Path, arm: str, k: int, epochs: int, workload: str) -> float | None:
    """Seconds per model-epoch of ``tree``'s batched engine in a fresh process (None: that tree
    lacks the arm)."""
    out = subprocess.run([sys.executable, "-c", ENGINE_SNIPPET, arm, json.dumps(_lrs(k)), str(epochs), workload],
                         env={**os.environ, "PYTHONPATH": str(tree / "src")}, capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def _against(legacy_tree: Path, commit: str, arm: str, args: argparse.Namespace) -> str:
    """This tree's and ``commit``'s batched engines in alternating fresh processes (see the module
    docstring)."""
    ours, theirs = [], []
    for _ in range(args.pairs):
        theirs.append(_engine_time(legacy_tree, arm, args.k, args.epochs, args.workload))
        if theirs[-1] is None:
            return f"  | {commit[:10]}: no such arm"
        ours.append(_engine_time(ROOT, arm, args.k, args.epochs, args.workload))
    ratios = sorted(a / b for a, b in zip(ours, theirs))
    return (f"  | fresh processes, {args.pairs} pairs: this {1e3 * min(ours):.2f}, {commit[:10]} {1e3 * min(theirs):.2f}"
            f" ms; this / that {min(ours) / min(theirs):.2f}x (best / best), {statistics.median(ratios):.2f}x "
            f"[{ratios[0]:.2f}, {ratios[-1]:.2f}] (pairs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arms", default="adam,hessian-adam,adabelief,soap,muon")
    parser.add_argument("--workload", default="mnist1d-mlp")
    parser.add_argument("--against", help="a commit whose batched engine to time side by side")
    parser.add_argument("--pairs", type=int, default=10, help="alternating fresh-process pairs for --against")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from hessian_lr.arms import get_arm
    from hessian_lr.training import train
    from hessian_lr.workloads import get_workload

    workload = get_workload(args.workload)
    workload.data  # load once, outside the timings
    runs = benchmark_runs(args.k)
    legacy_tree = None
    if args.against:
        legacy_tree = Path(tempfile.mkdtemp(prefix="hlr-legacy-")) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(legacy_tree), args.against],
                       check=True, capture_output=True)
    print(f"{args.workload}, K={args.k}, {args.epochs} epochs, 1 thread, best of {args.repeats}; CPU ms per "
          f"model-epoch (load average {os.getloadavg()[0]:.2f})")
    try:
        for name in args.arms.split(","):
            arm = get_arm(name)
            train(workload, arm, runs[:2], epochs=1, batch=True)  # warm-up (and the stacking probe)
            single = batched = float("inf")
            sequential = runs[:3]
            for _ in range(args.repeats):
                start = time.process_time()
                train(workload, arm, sequential, epochs=args.epochs, batch=False, evaluate_test=False)
                single = min(single, (time.process_time() - start) / (len(sequential) * args.epochs))
                start = time.process_time()
                train(workload, arm, runs, epochs=args.epochs, batch=True, evaluate_test=False)
                batched = min(batched, (time.process_time() - start) / (args.k * args.epochs))
            line = (f"{name:20s} one at a time {1e3 * single:7.2f}  batched {1e3 * batched:7.2f}  "
                    f"speed-up {single / batched:5.2f}x")
            if legacy_tree is not None:
                line += _against(legacy_tree, args.against, name, args)
            print(line, flush=True)
    finally:
        if legacy_tree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(legacy_tree)],
                           capture_output=True)


if __name__ == "__main__":
    main()
