"""Wall time of the default comparison pipeline, measured side by side in one invocation.

Rows (each a fresh run folder, each ``hessian-lr compare`` a fresh process so imports count):

Every row runs the default protocol (20 trials per arm, 10 paired seeds, the equal-lr ablation).

* ``sequential``  — one process, one model at a time (``--workers 1 --batch-trials 1
  --no-batch-startup``): the straightforward eager implementation;
* ``default``     — what ``hessian-lr compare`` does with no flags: one process per optimizer, TPE's
  10 random start-up trials trained as one batch, the other trials one at a time, the final seeds
  of a setting as one batch;
* ``batched``     — ``--batch-trials N``: trials trained N at a time (TPE with constant liar), the
  final seeds as one batch; the arms train side by side in threads of one process ("lanes",
  one intra-op thread each), so both cores work without a second process's start-up.

Then the 10-seed finals of two arms (adam, hessian-adam) both ways, and one training epoch.
Every row runs ``--repeats`` times, the rows interleaved round by round so that a noisy moment on
this shared machine hits all of them alike; the table gives the fastest and the median wall time
of each row, and the speed-ups against ``sequential`` for both. The load average is printed too.

    .venv/bin/python benchmarks/pipeline.py [--trials 20] [--epochs 20] [--batch-trials 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def timed_compare(out: Path, *flags: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hessian_lr.cli", "compare", "--out", str(out), "--quiet", *flags],
                   check=True)
    return time.perf_counter() - start


def timed_finals(out: Path, **config_changes) -> float:
    from hessian_lr.config import CompareConfig
    from hessian_lr.pipeline.compare import FinalsTask, train_finals
    from hessian_lr.pipeline.execution import executor
    from hessian_lr.pipeline.store import FinalRun

    config = CompareConfig(out=out, **config_changes)
    tasks = [FinalsTask(config, arm, tuple(FinalRun.of(arm, {"lr": 2e-3}, seed, config.epochs, config.workload)
                                           for seed in config.final_seeds)) for arm in config.optimizers]
    start = time.perf_counter()
    with executor(config.workers, config.threads, config.lanes, lambda event: None) as run_all:
        run_all(train_finals, tasks)
    return time.perf_counter() - start


def one_epoch_ms() -> float:
    from hessian_lr.arms import get_arm
    from hessian_lr.training import train_run
    from hessian_lr.workloads import get_workload

    torch.set_num_threads(1)
    workload = get_workload("mnist1d-mlp")
    runs = {arm: train_run(workload, get_arm(arm), 2e-3, epochs=10, seed=0) for arm in ("adam", "hessian-adam")}
    return {arm: 1000 * run.wall_s / 10 for arm, run in runs.items()}


def _table(title: str, walls: dict[str, list[float]]) -> None:
    best = {name: min(times) for name, times in walls.items()}
    median = {name: statistics.median(times) for name, times in walls.items()}
    base = next(iter(walls))
    print(f"\n{title:<26}{'best s':>9}{'speed-up':>10}{'median s':>10}{'speed-up':>10}   all runs (s)")
    for name in walls:
        print(f"{name:<26}{best[name]:>9.2f}{best[base] / best[name]:>9.2f}x{median[name]:>10.2f}"
              f"{median[base] / median[name]:>9.2f}x   {' '.join(f'{t:.2f}' for t in walls[name])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-trials", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="runs of every row, interleaved (default: 3)")
    args = parser.parse_args()
    budget = ["--trials", str(args.trials), "--epochs", str(args.epochs)]
    root = Path(tempfile.mkdtemp(prefix="hessian-lr-bench-"))
    try:
        print(f"cores {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}; {args.trials} trials x "
              f"{args.epochs} epochs x 2 optimizers + 10 seeds + ablation; {args.repeats} interleaved runs per row")
        rows = {
            "sequential": ["--workers", "1", "--batch-trials", "1", "--no-batch-startup"],
            "default": [],
            "batched": ["--batch-trials", str(args.batch_trials)],
        }
        pipeline: dict[str, list[float]] = {name: [] for name in rows}
        for repeat in range(args.repeats):
            for name, flags in rows.items():
                pipeline[name].append(timed_compare(root / f"{name}-{repeat}", *budget, *flags))
        _table("pipeline", pipeline)

        finals: dict[str, list[float]] = {"sequential": [], "batched": []}
        for repeat in range(args.repeats):
            finals["sequential"].append(timed_finals(root / f"f-seq-{repeat}", seeds=10, workers=1, batch_trials=1,
                                                     batch_startup=False, epochs=args.epochs))
            finals["batched"].append(timed_finals(root / f"f-batch-{repeat}", seeds=10, batch_trials=10,
                                                  epochs=args.epochs))
        _table("10-seed finals (2 arms)", finals)
        epoch = one_epoch_ms()
        print("\none epoch (35 steps of batch 100, 1 thread): "
              + ", ".join(f"{arm} {ms:.1f} ms" for arm, ms in epoch.items()))
        print(f"load average after {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
