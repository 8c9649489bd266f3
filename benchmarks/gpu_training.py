"""A training run through hessian-lr against the same model, data and optimizer in a plain
hand-written PyTorch loop, side by side: ``cifar10-resnet18`` and ``shakespeare-char-gpt``.

For each workload and arm (``adam``, ``hessian-adam``) it runs ``hessian_lr.training.train`` (one
model, ``--steps`` steps, validation before and after, the package's skeleton on ``--device``) and
:func:`plain_run` -- seed, build the workload's model, build the arm's optimizer, iterate the
workload's own training stream, ``loss.backward(); opt.step()``, validation in eval mode under
``no_grad`` before and after -- after one short untimed warm-up of each (CUDA context, cuDNN's
algorithm search, allocator). Printed: wall seconds, ms per step, the ratio, and both final
validation losses (same seed: close, not bit-identical -- the skeleton draws from the run's own RNG
streams).

Data come from ``--data-dir`` (else ``$HESSIAN_LR_DATA``); where they are not there, random data of
the real files' formats and sizes are written to a scratch folder under the temporary directory
(``benchmarks/real_workloads.py``'s ``ensure_data``, whose evaluation loop and small validation
split this script shares) and the output says so: timings are then real, losses meaningless.

    python benchmarks/gpu_training.py [--device cuda] [--steps 200] [--data-dir D] [--tiny]

``--tiny`` (for ``--device cpu``): a few steps at small batches, to check that the script runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from functools import partial
from pathlib import Path

import torch
from gpu_common import describe, device_or_exit, wall_clock
from real_workloads import ensure_data, plain_evaluate, with_small_validation

from hessian_lr.training.loop import train_run
from hessian_lr.training.placement import Placement
from hessian_lr.training.records import initial_model

ARMS = ("adam", "hessian-adam")
LR = 1e-3


def workloads(tiny: bool):
    """The two workloads (registered names where registered, else their factories); for ``--tiny``
    ResNet-18 at batch 8, nanoGPT's CPU configuration, and 64 validation rows."""
    from hessian_lr.workloads import standard
    from hessian_lr.workloads.registry import WORKLOADS

    def named(name: str, factory):
        return WORKLOADS[name] if name in WORKLOADS else factory()

    cifar = named("cifar10-resnet18", standard.cifar10_resnet18)
    gpt = named("shakespeare-char-gpt", standard.shakespeare_char_gpt)
    if tiny:
        cifar = dataclasses.replace(cifar, batch_size=8, load_data=partial(standard.cifar10_loaders, 8, None, 64))
        return [with_small_validation(cifar), with_small_validation(standard.shakespeare_char_gpt(size="cpu"))]
    return [cifar, gpt]


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """As the skeleton moves a loader's batch: from pinned memory, non-blocking, on a GPU."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def _on(batches, device: torch.device):
    return ((_to(x, device), _to(y, device)) for x, y in batches)


def plain_run(workload, arm, seed: int, steps: int, device: torch.device) -> tuple[float, float]:
    """The hand-written loop (``benchmarks/real_workloads.py``'s, on a device); returns (wall
    seconds, final validation loss)."""
    start = wall_clock(device)
    model = initial_model(workload, seed).to(device)
    optimizer = arm.build(list(model.parameters()), lr=LR)
    stream = workload.data.train(torch.Generator().manual_seed(seed))
    plain_evaluate(model, _on(workload.data.val(), device), workload.loss_fn)
    model.train()
    step = 0
    while step < steps:
        for x, y in _on(stream, device):
            loss = workload.objective(model, x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == steps:
                break
    val = plain_evaluate(model, _on(workload.data.val(), device), workload.loss_fn)
    return wall_clock(device) - start, val


def package_run(workload, arm, seed: int, steps: int, device: torch.device) -> tuple[float, float]:
    """The same run through ``hessian_lr.training.train_run``; returns (wall seconds, final
    validation loss)."""
    start = wall_clock(device)
    result = train_run(workload, arm, LR, seed=seed, steps=steps, eval_every=steps, evaluate_test=False,
                       placement=Placement(str(device)))
    return wall_clock(device) - start, result.val_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default: 200; --tiny 3)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--tiny", action="store_true", help="small batches and few steps (a CPU check)")
    parser.add_argument("--workloads", default="cifar10-resnet18,shakespeare-char-gpt",
                        help="comma-separated, of the default two")
    args = parser.parse_args()
    device = device_or_exit(args.device, "gpu_training.py")
    steps = args.steps or (3 if args.tiny else 200)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both loops alike: what a GPU user sets
    from hessian_lr.arms import get_arm

    folder, source = ensure_data(Path(args.data_dir) if args.data_dir else None)
    os.environ["HESSIAN_LR_DATA"] = str(folder)
    print(describe(device))
    print(f"data: {source}" + ("; --tiny: small batches, 64 validation rows (a check that the script runs, "
                               "not a measurement)" if args.tiny else ""))
    print(f"one run each, {steps} steps, lr {LR}, seed 0, validation before and after; wall seconds "
          f"(after an untimed {min(steps, 5)}-step warm-up of each loop)")
    print(f"{'workload':<26}{'arm':<14}{'hessian-lr s':>13}{'plain s':>9}{'ms/step':>10}{'plain':>10}{'ratio':>8}"
          f"{'val loss':>10}{'plain':>8}")
    chosen = args.workloads.split(",")
    for workload in workloads(args.tiny):
        if not any(workload.name.startswith(name) for name in chosen):
            continue
        workload.data  # read once, outside the timings
        for name in ARMS:
            arm = get_arm(name)
            package_run(workload, arm, 1, min(steps, 5), device)  # warm-ups
            plain_run(workload, arm, 1, min(steps, 5), device)
            ours, our_val = package_run(workload, arm, 0, steps, device)
            theirs, their_val = plain_run(workload, arm, 0, steps, device)
            print(f"{workload.name:<26}{name:<14}{ours:13.2f}{theirs:9.2f}{1e3 * ours / steps:10.2f}"
                  f"{1e3 * theirs / steps:10.2f}{ours / theirs:7.2f}x{our_val:10.4f}{their_val:8.4f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
