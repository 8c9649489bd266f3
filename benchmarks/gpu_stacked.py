"""The stacked engine on a device: K models of a workload at once vs one model at a time.

``benchmarks/batched_training.py`` on a device: the same K benchmark runs (its
:func:`batched_training.benchmark_runs`: lrs log-spaced over [10^-3.5, 10^-2], run i seed i),
``hessian_lr.training.train(..., batch=True)`` for K = 10 and K = 100 stacked models against
``batch=False`` (one model after another, the reference loop) on ``--sequential`` of them, with a
``Placement`` on ``--device``. Wall time (the device synchronised at both ends; CPU time, which
batched_training.py counts, misses a GPU's work), milliseconds per model-epoch, after an untimed
one-epoch warm-up of both.

    python benchmarks/gpu_stacked.py [--device cuda] [--k 10 100] [--epochs 3] [--arms adam,hessian-adam]
"""

from __future__ import annotations

import argparse

import torch
from batched_training import benchmark_runs
from gpu_common import describe, device_or_exit, wall_clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workload", default="mnist1d-mlp")
    parser.add_argument("--arms", default="adam,hessian-adam")
    parser.add_argument("--k", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=3, help="models trained one at a time (the baseline)")
    args = parser.parse_args()
    device = device_or_exit(args.device, "gpu_stacked.py")
    from hessian_lr.arms import get_arm
    from hessian_lr.training import train
    from hessian_lr.training.placement import Placement
    from hessian_lr.workloads import get_workload

    placement = Placement(str(device))
    workload = get_workload(args.workload)
    workload.data  # built once, outside the timings
    print(describe(device))
    print(f"{args.workload}, {args.epochs} epochs; wall ms per model-epoch (device synchronised); one at a time "
          f"on {args.sequential} runs, stacked on K runs")
    print(f"{'arm':<16}{'one at a time':>14}" + "".join(f"{f'K={k}':>10}{'speed-up':>10}" for k in args.k))

    def per_model_epoch(runs, batch: bool) -> float:
        start = wall_clock(device)
        train(workload, arm, runs, epochs=args.epochs, batch=batch, evaluate_test=False, placement=placement)
        return (wall_clock(device) - start) / (len(runs) * args.epochs)

    for name in args.arms.split(","):
        arm = get_arm(name)
        train(workload, arm, benchmark_runs(2), epochs=1, batch=True, evaluate_test=False, placement=placement)
        train(workload, arm, benchmark_runs(1), epochs=1, batch=False, evaluate_test=False, placement=placement)
        single = per_model_epoch(benchmark_runs(args.sequential), batch=False)
        cells = ""
        for k in args.k:
            stacked = per_model_epoch(benchmark_runs(k), batch=True)
            cells += f"{1e3 * stacked:10.3f}{single / stacked:9.1f}x"
        print(f"{name:<16}{1e3 * single:14.3f}{cells}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
