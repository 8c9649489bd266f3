"""A short check of the training contract's device paths, for a machine with a GPU.

On ``--device`` (default ``cuda``): one BatchNorm + dropout model (one at a time) in fp32, bf16,
fp16 (GradScaler) and compiled; a loader-fed workload (batches moved from pinned memory); K = 4
stacked models of mnist1d-mlp (the hand-written MLP path) and of mnist1d-cnn (its batched forward)
against the same runs on the CPU; and the device record results.json would carry. Every run must
be finite, the same seed must repeat exactly on the device, and the stacked runs must agree with
the CPU to float tolerance. Prints one line per check and exits 1 on the first failure.

Run: ``.venv/bin/python benchmarks/gpu_contract_check.py [--device cuda:0]`` (``--device cpu``
checks the script itself here).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "training"))
import contract_workloads as cw  # noqa: E402

from hessian_lr.arms import get_arm  # noqa: E402
from hessian_lr.training import Run, device_record, resolve_placement, train, train_run  # noqa: E402
from hessian_lr.workloads import get_workload  # noqa: E402


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    adam = get_arm("adam")
    print(device_record(resolve_placement(args.device)))
    for precision, compile in (("fp32", False), ("bf16", False), ("fp16", False), ("fp32", True)):
        placement = resolve_placement(args.device, precision, compile)
        start = time.perf_counter()
        a = train_run(cw.bn_dropout, adam, 1e-2, epochs=2, seed=0, placement=placement)
        b = train_run(cw.bn_dropout, adam, 1e-2, epochs=2, seed=0, placement=placement)
        finite = all(v is not None and math.isfinite(v) for v in a.val_loss_curve)
        check(f"bn+dropout {precision}{' compiled' if compile else ''}", finite and a.val_loss_curve == b.val_loss_curve,
              f"val {a.val_loss:.4f} ({time.perf_counter() - start:.1f} s for two runs)")
    placement = resolve_placement(args.device)
    a = train_run(cw.loader_fed, adam, 1e-2, epochs=2, seed=0, placement=placement)
    b = train_run(cw.loader_fed, adam, 1e-2, epochs=2, seed=0, placement=placement)
    check("loader-fed", a.val_loss_curve == b.val_loss_curve and math.isfinite(a.val_loss), f"val {a.val_loss:.4f}")
    for name in ("mnist1d-mlp", "mnist1d-cnn"):
        runs = [Run({"lr": lr}, seed) for lr, seed in ((3e-3, 0), (1e-3, 0), (3e-3, 1), (1e-2, 2))]
        start = time.perf_counter()
        device = train(get_workload(name), adam, runs, epochs=2, placement=placement)
        elapsed = time.perf_counter() - start
        cpu = train(get_workload(name), adam, runs, epochs=2)
        worst = max(abs(d.val_loss - c.val_loss) / abs(c.val_loss) for d, c in zip(device, cpu))
        check(f"{name} stacked K=4", worst < 1e-3, f"max relative difference to the CPU {worst:.2e} ({elapsed:.1f} s)")


if __name__ == "__main__":
    main()
