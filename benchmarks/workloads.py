"""One-run wall time and final metrics of every registered workload at its default budget.

Each workload is trained with torch Adam (the lr below) on one intra-op thread by the plain loop of
:mod:`hessian_lr.workloads.plain`, after one untimed warm-up run; the data are built before timing.
Wall time (median and fastest of the repeats) and the process's CPU time (median): on a machine
that other jobs share, CPU time is the closer estimate of the quiet wall time.

    .venv/bin/python benchmarks/workloads.py [--repeats 3] [--workloads a,b]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from hessian_lr.workloads import WORKLOADS, get_workload
from hessian_lr.workloads.plain import train_plain

# Adam lrs that train each workload sensibly at its budget (not tuned optima)
LRS = {"mnist1d-gru": 1e-2, "modular-addition-transformer": 3e-3, "noisy-quadratic": 3e-2, "rotated-quadratic": 3e-2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per workload (seeds 0..)")
    parser.add_argument("--workloads", help="comma-separated (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.workloads.split(",") if args.workloads else list(WORKLOADS)
    print(f"{'workload':30} {'params':>7} {'steps':>6} {'wall s (median, min)':>22} {'cpu s':>6} {'val loss':>9} "
          f"{'test acc':>8}")
    for name in names:
        work = get_workload(name)
        _ = work.data
        lr = LRS.get(name, 2e-3)
        train_plain(work, lr, seed=0, epochs=1, test=False)  # warm-up
        runs = [train_plain(work, lr, seed=s) for s in range(args.repeats)]
        walls = [r.wall_s for r in runs]
        steps = -(-len(work.data.x_train) // work.batch_size) * work.epochs
        params = sum(p.numel() for p in runs[0].model.parameters())
        acc = [r.test_accuracy for r in runs if r.test_accuracy is not None]
        cpu = statistics.median(r.cpu_s for r in runs)
        print(f"{name:30} {params:>7} {steps:>6} {statistics.median(walls):>13.2f} ({min(walls):.2f}) {cpu:>6.2f} "
              f"{statistics.median(r.val_loss[-1] for r in runs):>9.4f} "
              f"{(f'{statistics.mean(acc):.3f}' if acc else '-'):>8}", flush=True)


if __name__ == "__main__":
    main()
