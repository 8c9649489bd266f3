"""Wall time of the default comparison pipeline, measured side by side in one invocation.

Rows (each a fresh run folder, each ``hessian-lr compare`` a fresh process so imports count):

* ``sequential``  — one process, one model at a time (``--workers 1 --no-batch-startup``): the
  straightforward eager implementation;
* ``default``     — what ``hessian-lr compare`` does with no flags: one process per optimizer, TPE's
  10 random start-up trials trained as one batch, the other trials one at a time;
* ``batched``     — ``--batch-trials N``: trials trained N at a time in one process whose matrix
  products use both cores (TPE with constant liar), the final seeds as one batch.

Then the 10-seed finals of two arms (adam, hessian-adam) both ways, and one training epoch.
Prints ratios against ``sequential``; the thread count and load average are printed too, since
these machines are shared.

    .venv/bin/python benchmarks/pipeline.py [--trials 20] [--epochs 20] [--batch-trials 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
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
    from hessian_lr.compare import RunSpec, _executor, final_runs
    from hessian_lr.config import CompareConfig

    config = CompareConfig(out=out, **config_changes)
    start = time.perf_counter()
    with _executor(config, lambda event: None) as run_all:
        run_all(final_runs, [(config, arm, [RunSpec(arm, 2e-3, seed, config.epochs, config.workload)
                                            for seed in config.final_seeds]) for arm in config.optimizers])
    return time.perf_counter() - start


def one_epoch_ms() -> float:
    from hessian_lr.arms import get_arm
    from hessian_lr.training import train_run
    from hessian_lr.workloads import get_workload

    torch.set_num_threads(1)
    workload = get_workload("mnist1d-mlp")
    runs = {arm: train_run(workload, get_arm(arm), 2e-3, epochs=10, seed=0) for arm in ("adam", "hessian-adam")}
    return {arm: 1000 * run.wall_s / 10 for arm, run in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-trials", type=int, default=10)
    args = parser.parse_args()
    budget = ["--trials", str(args.trials), "--epochs", str(args.epochs)]
    root = Path(tempfile.mkdtemp(prefix="hessian-lr-bench-"))
    try:
        print(f"cores {os.cpu_count()}, 1 intra-op thread per process, load average before "
              f"{os.getloadavg()[0]:.2f}; {args.trials} trials x {args.epochs} epochs x 2 optimizers + finals")
        rows = {
            "sequential": timed_compare(root / "seq", *budget, "--workers", "1", "--no-batch-startup"),
            "default": timed_compare(root / "default", *budget),
            "batched": timed_compare(root / "batched", *budget, "--batch-trials", str(args.batch_trials)),
        }
        print(f"\n{'pipeline':<12}{'wall s':>9}{'speed-up':>10}")
        for name, wall in rows.items():
            print(f"{name:<12}{wall:>9.2f}{rows['sequential'] / wall:>9.2f}x")

        finals = {
            "sequential": timed_finals(root / "f-seq", seeds=10, workers=1, batch_startup=False, epochs=args.epochs),
            "batched": timed_finals(root / "f-batch", seeds=10, batch_trials=10, epochs=args.epochs),
        }
        print(f"\n{'10-seed finals (2 arms)':<26}{'wall s':>9}{'speed-up':>10}")
        for name, wall in finals.items():
            print(f"{name:<26}{wall:>9.2f}{finals['sequential'] / wall:>9.2f}x")
        epoch = one_epoch_ms()
        print("\none epoch (35 steps of batch 100, 1 thread): "
              + ", ".join(f"{arm} {ms:.1f} ms" for arm, ms in epoch.items()))
        print(f"load average after {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
