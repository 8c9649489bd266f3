"""Per-workload cost of the suite: one-at-a-time vs batched training, side by side, and the wall
time of each workload in a finished suite.

    .venv/bin/python benchmarks/suite.py [--arms adam,hessian-adam,sgd,hessian-sgd] [--k 10]
        [--epochs 3] [--repeats 2] [--workloads all] [--from runs/suite]

For every workload and arm it trains K runs (K lrs log-spaced in [1e-3.5, 1e-2], K seeds) for a
few epochs with ``train(..., batch=True)`` and 3 of them with ``batch=False``, alternating repeat by
repeat, keeping the best CPU time of each (one intra-op thread: CPU time is the work done, and is
far less disturbed by other jobs than wall time), and prints milliseconds per model-epoch and the
batched / one-at-a-time ratio. With ``--from`` it also prints each workload's wall seconds from
that suite's suite.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default="adam,hessian-adam,sgd,hessian-sgd")
    parser.add_argument("--workloads", default="all")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--from", dest="suite", type=Path, help="a finished suite folder (its suite.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from hessian_lr.arms import get_arm
    from hessian_lr.pipeline.suite import parse_workloads
    from hessian_lr.training import Run, train
    from hessian_lr.workloads import get_workload

    walls = {}
    if args.suite is not None:
        walls = json.loads((args.suite / "suite.json").read_text()).get("wall_s") or {}
    runs = [Run({"lr": 10 ** (-3.5 + 1.5 * i / max(args.k - 1, 1))}, i) for i in range(args.k)]
    print(f"K={args.k}, {args.epochs} epochs, best of {args.repeats}, 1 thread, CPU ms per model-epoch "
          f"(load average {os.getloadavg()[0]:.2f})")
    print(f"{'workload':30s}{'arm':14s}{'one at a time':>15s}{'batched':>10s}{'ratio':>8s}"
          + (f"{'suite wall s':>14s}" if walls else ""))
    for name in parse_workloads(args.workloads):
        workload = get_workload(name)
        workload.data
        epochs = min(args.epochs, workload.epochs)
        for arm_name in args.arms.split(","):
            arm = get_arm(arm_name)
            train(workload, arm, runs[:2], epochs=1, batch=True, evaluate_test=False)  # warm-up and probe
            single = batched = float("inf")
            for _ in range(args.repeats):
                start = time.process_time()
                train(workload, arm, runs[:3], epochs=epochs, batch=False, evaluate_test=False)
                single = min(single, (time.process_time() - start) / (3 * epochs))
                start = time.process_time()
                train(workload, arm, runs, epochs=epochs, batch=True, evaluate_test=False)
                batched = min(batched, (time.process_time() - start) / (args.k * epochs))
            wall = f"{walls[name]:14.1f}" if name in walls and arm_name == args.arms.split(",")[0] else ""
            print(f"{name:30s}{arm_name:14s}{1e3 * single:15.2f}{1e3 * batched:10.2f}{single / batched:7.2f}x{wall}",
                  flush=True)


if __name__ == "__main__":
    main()
