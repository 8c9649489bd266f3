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

Data come from ``--data-dir`` (else ``$HESSIAN_LR_DATA``). Where CIFAR-10 or Shakespeare is not
there, synthetic data of the real formats and sizes are written into a temporary folder and the
output says so (timings are then real, losses meaningless).

    python benchmarks/gpu_training.py [--device cuda] [--steps 200] [--data-dir D] [--tiny]

``--tiny`` (for ``--device cpu``): a few steps at small batches, to check that the script runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from gpu_common import describe, device_or_exit, wall_clock

ARMS = ("adam", "hessian-adam")
LR = 1e-3
CIFAR_FOLDER = "cifar-10-batches-py"
SHAKESPEARE_FILE = Path("shakespeare_char") / "input.txt"


def _cifar_present(root: Path) -> bool:
    folder = root / CIFAR_FOLDER
    return all((folder / name).is_file() for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"])


def write_synthetic_cifar10(root: Path, per_file: int = 10_000, test: int = 10_000) -> None:
    """Random uint8 images and labels in CIFAR-10's python format and sizes under ``root``."""
    rng = np.random.default_rng(0)
    folder = root / CIFAR_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in [*((f"data_batch_{i}", per_file) for i in range(1, 6)), ("test_batch", test)]:
        entry = {b"batch_label": b"synthetic", b"labels": rng.integers(0, 10, count).tolist(),
                 b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 b"filenames": [f"synthetic_{i}.png".encode() for i in range(count)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {b"num_cases_per_batch": per_file, b"num_vis": 3072,
            b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
                             b"ship", b"truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def write_synthetic_shakespeare(root: Path, characters: int = 1_115_394) -> None:
    """Random text over 65 characters, the length of nanoGPT's ``input.txt``."""
    alphabet = np.frombuffer(b"\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    text = alphabet[np.random.default_rng(0).integers(0, len(alphabet), characters)].tobytes()
    path = root / SHAKESPEARE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)


def data_folder(requested: str | None, scratch: Path, tiny: bool = False) -> tuple[Path, list[str]]:
    """A folder holding both data sets: ``requested`` (else ``$HESSIAN_LR_DATA``) where it has them,
    else ``scratch`` with links to what it has and synthetic files for the rest; and notes.
    ``tiny``: small synthetic sets whatever is there (a CPU check of the script)."""
    if tiny:
        write_synthetic_cifar10(scratch, per_file=64, test=64)
        write_synthetic_shakespeare(scratch, characters=100_000)
        return scratch, ["--tiny: SYNTHETIC small data sets (a check that the script runs, not a measurement)"]
    source = Path(requested or os.environ.get("HESSIAN_LR_DATA") or scratch / "none").expanduser()
    have_cifar, have_text = _cifar_present(source), (source / SHAKESPEARE_FILE).is_file()
    if have_cifar and have_text:
        return source, []
    notes = []
    if have_cifar:
        (scratch / CIFAR_FOLDER).symlink_to(source / CIFAR_FOLDER)
    else:
        write_synthetic_cifar10(scratch)
        notes.append(f"CIFAR-10 not found under {source}: SYNTHETIC random images of its format and size "
                     "(timings real, losses and accuracies meaningless)")
    if have_text:
        (scratch / SHAKESPEARE_FILE).parent.mkdir(parents=True, exist_ok=True)
        (scratch / SHAKESPEARE_FILE).symlink_to(source / SHAKESPEARE_FILE)
    else:
        write_synthetic_shakespeare(scratch)
        notes.append(f"Shakespeare not found under {source}: SYNTHETIC random text of its size and alphabet "
                     "(timings real, losses meaningless)")
    return scratch, notes


def workloads(tiny: bool):
    """The two workloads (registered names where registered, else their factories), shrunk for
    ``--tiny``: ResNet-18 at batch 8, nanoGPT's CPU configuration."""
    from hessian_lr.workloads import standard
    from hessian_lr.workloads.registry import WORKLOADS

    def named(name: str, factory):
        return WORKLOADS[name] if name in WORKLOADS else factory()

    cifar = named("cifar10-resnet18", standard.cifar10_resnet18)
    gpt = named("shakespeare-char-gpt", standard.shakespeare_char_gpt)
    if tiny:
        cifar = dataclasses.replace(cifar, batch_size=8, load_data=partial(standard.cifar10_loaders, 8, None, 64))
        gpt = standard.shakespeare_char_gpt(size="cpu")
    return [cifar, gpt]


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """As the skeleton moves a loader's batch: from pinned memory, non-blocking, on a GPU."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


@torch.no_grad()
def _validation_loss(workload, model: torch.nn.Module, device: torch.device) -> float:
    model.eval()
    total, count = 0.0, 0
    for x, y in workload.data.val():
        x, y = _to(x, device), _to(y, device)
        total += float(workload.loss_fn(model(x), y)) * len(y)
        count += len(y)
    model.train()
    return total / count


def plain_run(workload, arm, seed: int, steps: int, device: torch.device) -> tuple[float, float]:
    """The hand-written loop; returns (wall seconds, final validation loss)."""
    start = wall_clock(device)
    torch.manual_seed(seed)
    model = workload.build_model().to(device)
    optimizer = arm.build(list(model.parameters()), lr=LR)
    stream = workload.data.train(torch.Generator().manual_seed(seed))
    _validation_loss(workload, model, device)
    model.train()
    step = 0
    while step < steps:
        for x, y in stream:
            loss = workload.objective(model, _to(x, device), _to(y, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
    val = _validation_loss(workload, model, device)
    return wall_clock(device) - start, val


def package_run(workload, arm, seed: int, steps: int, device: torch.device) -> tuple[float, float]:
    """The same run through ``hessian_lr.training.train``; returns (wall seconds, final validation loss)."""
    from hessian_lr.training import Run, train
    from hessian_lr.training.placement import Placement

    start = wall_clock(device)
    (result,) = train(workload, arm, [Run({"lr": LR}, seed)], steps=steps, eval_every=steps, evaluate_test=False,
                      batch=False, placement=Placement(str(device)))
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

    with tempfile.TemporaryDirectory(prefix="hlr-gpu-data-") as scratch:
        folder, notes = data_folder(args.data_dir, Path(scratch), args.tiny)
        os.environ["HESSIAN_LR_DATA"] = str(folder)
        print(describe(device))
        for note in notes:
            print(f"NOTE: {note}")
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
