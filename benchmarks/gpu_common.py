"""What the GPU benchmarks (``benchmarks/gpu.sh``) share: the device check, a wall clock that waits
for the device, and the header line naming the machine.

    python benchmarks/gpu_common.py --device cuda   # one line; exit 1 when the device is absent
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

__all__ = ["device_or_exit", "synchronize", "wall_clock", "describe"]


def device_or_exit(spec: str, program: str) -> torch.device:
    """The device ``spec`` names, or exit 1 with one line saying why it is not usable here."""
    try:
        device = torch.device(spec)
    except RuntimeError:
        sys.exit(f"{program}: --device {spec!r} is not a device (cpu, cuda, cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit(f"{program}: no CUDA device here (torch {torch.__version__}, built for CUDA "
                     f"{torch.version.cuda}: torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            sys.exit(f"{program}: --device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        sys.exit(f"{program}: --device {spec!r}: only cpu and cuda[:N] are benchmarked")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_clock(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work has finished."""
    synchronize(device)
    return time.perf_counter()


def describe(device: torch.device) -> str:
    """One line: torch, the device (name, capability, CUDA/cuDNN) and the host."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        where = (f"{torch.cuda.get_device_name(index)} (sm {major}.{minor}, CUDA {torch.version.cuda}, "
                 f"cuDNN {torch.backends.cudnn.version()})")
    else:
        where = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"torch {torch.__version__} on {where}; host {platform.node()} with {os.cpu_count()} CPUs"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Check the benchmark device and name it in one line.")
    parser.add_argument("--device", default="cuda")
    print(describe(device_or_exit(parser.parse_args().device, "gpu.sh")))
