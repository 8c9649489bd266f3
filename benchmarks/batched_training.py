"""Per model-epoch time: K models at once vs one at a time, with every arm's own optimizer.

    .venv/bin/python benchmarks/batched_training.py [--k 10] [--epochs 3] [--repeats 3]
        [--arms adam,hessian-adam,adabelief,soap,muon] [--workload mnist1d-mlp]
        [--against COMMIT]

For each arm it times ``train(..., batch=False)`` (one model at a time, the nanoGPT-style
reference loop) and ``train(..., batch=True)`` (K stacked models: the arm's own optimizer, one
over the stack where the stacking probe allows, else one per model) on K runs with K different
lrs and seeds, alternating repeat by repeat and keeping the best of each (the machine is shared),
and prints milliseconds per model-epoch and the speed-up. All timings run on one intra-op thread and
count the process's CPU time (``time.process_time``), which other jobs on a shared machine
disturb far less than wall time (one thread: CPU time is the work done).

``--against COMMIT`` also times the batched engine of an earlier commit (checked out into a
temporary git worktree and run in its own process, alternating with this tree's runs), e.g. the
commit before the engine took the arms' own optimizers, whose hand-derived Adam/SGD update
covered only adam, adamw, sgd and their grad-diff wrappers; its ratio to this tree is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

LEGACY_SNIPPET = """
import json, sys, time, torch
torch.set_num_threads(1)
torch.set_flush_denormal(True)  # as this tree's engine does: the same arithmetic conditions
from hessian_lr.training.batched import train_batch
from hessian_lr.workloads import get_workload
arm, k, epochs, workload = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
w = get_workload(workload); w.data
runs = [(10 ** (-3.5 + 1.5 * i / max(k - 1, 1)), i) for i in range(k)]
train_batch(w, arm, runs[:2], epochs=1)
start = time.process_time()
train_batch(w, arm, runs, epochs=epochs, evaluate_test=False)
print(json.dumps((time.process_time() - start) / (k * epochs)))
"""


def _runs(k: int):
    from hessian_lr.training import Run

    return [Run({"lr": 10 ** (-3.5 + 1.5 * i / max(k - 1, 1))}, i) for i in range(k)]


def _legacy_time(tree: Path, arm: str, k: int, epochs: int, workload: str) -> float | None:
    """Seconds per model-epoch of the earlier commit's batched engine (None: it lacks the arm)."""
    out = subprocess.run([sys.executable, "-c", LEGACY_SNIPPET, arm, str(k), str(epochs), workload],
                         env={**os.environ, "PYTHONPATH": str(tree / "src")}, capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arms", default="adam,hessian-adam,adabelief,soap,muon")
    parser.add_argument("--workload", default="mnist1d-mlp")
    parser.add_argument("--against", help="a commit whose batched engine to time side by side")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from hessian_lr.arms import get_arm
    from hessian_lr.training import train
    from hessian_lr.workloads import get_workload

    workload = get_workload(args.workload)
    workload.data  # load once, outside the timings
    runs = _runs(args.k)
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
            single = batched = legacy = float("inf")
            sequential = runs[:3]
            for _ in range(args.repeats):
                start = time.process_time()
                train(workload, arm, sequential, epochs=args.epochs, batch=False, evaluate_test=False)
                single = min(single, (time.process_time() - start) / (len(sequential) * args.epochs))
                start = time.process_time()
                train(workload, arm, runs, epochs=args.epochs, batch=True, evaluate_test=False)
                batched = min(batched, (time.process_time() - start) / (args.k * args.epochs))
                if legacy_tree is not None and legacy is not None:
                    seconds = _legacy_time(legacy_tree, name, args.k, args.epochs, args.workload)
                    legacy = None if seconds is None else min(legacy, seconds)
            line = (f"{name:20s} one at a time {1e3 * single:7.2f}  batched {1e3 * batched:7.2f}  "
                    f"speed-up {single / batched:5.2f}x")
            if legacy_tree is not None:
                line += (f"  | {args.against[:10]}: no such arm" if legacy is None else
                         f"  | {args.against[:10]} batched {1e3 * legacy:7.2f}  this / that {batched / legacy:5.2f}x")
            print(line, flush=True)
    finally:
        if legacy_tree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(legacy_tree)],
                           capture_output=True)


if __name__ == "__main__":
    main()
