"""Per model-epoch time: batched ``train_batch`` vs sequential ``train_run`` (mnist1d-mlp).

    .venv/bin/python benchmarks/batched_training.py [--k 20] [--epochs 5] [--threads 1]
        [--arms adam,hessian-adam] [--same-seed]

Prints one line per arm: sequential and batched milliseconds per model-epoch and the ratio.
The sequential baseline trains 3 models per repeat; the best of ``--repeats`` alternating
repeats is kept for both (other processes share this machine's two cores).
"""

from __future__ import annotations

import argparse
import time

import torch

from hessian_lr.arms import get_arm
from hessian_lr.training.batched import train_batch
from hessian_lr.training.loop import train_run
from hessian_lr.workloads import get_workload


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arms", default="adam,hessian-adam")
    parser.add_argument("--same-seed", action="store_true", help="all models share seed 0 (one batch order)")
    parser.add_argument("--workload", default="mnist1d-mlp")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workload = get_workload(args.workload)
    workload.data  # load once, outside the timings
    runs = [(10 ** (-3.5 + 1.5 * i / max(args.k - 1, 1)), 0 if args.same_seed else i) for i in range(args.k)]
    for arm_name in args.arms.split(","):
        train_batch(workload, arm_name, runs[:2], epochs=1)  # warm-up
        train_run(workload, get_arm(arm_name), 1e-3, epochs=1, seed=0)
        sequential = batched = float("inf")
        for _ in range(args.repeats):  # alternate, keep the best of each: this machine is shared
            start = time.perf_counter()
            for lr, seed in runs[:3]:
                train_run(workload, get_arm(arm_name), lr, epochs=args.epochs, seed=seed, evaluate_test=False)
            sequential = min(sequential, (time.perf_counter() - start) / (3 * args.epochs))
            start = time.perf_counter()
            train_batch(workload, arm_name, runs, epochs=args.epochs, evaluate_test=False)
            batched = min(batched, (time.perf_counter() - start) / (args.k * args.epochs))
        print(f"{arm_name:14s} K={args.k} threads={args.threads} same_seed={args.same_seed}: "
              f"sequential {1e3 * sequential:.2f} ms/model-epoch, batched {1e3 * batched:.2f} ms/model-epoch, "
              f"speed-up {sequential / batched:.2f}x")

if __name__ == "__main__":
    main()
