"""Where and how a run computes: the device, the floating-point precision and torch.compile.

:class:`Placement` is resolved once per process from ``--device``/``--precision``/``--compile``
(:func:`resolve_placement`), before anything is created: a device that is not there is a
``ValueError`` naming it. :func:`device_record` is what results.json records about it.
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Placement", "PRECISIONS", "DEVICE_CHOICES", "resolve_device", "resolve_placement", "device_record",
           "set_process_device", "process_device"]

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Placement:
    """A resolved device (never ``"auto"``), a precision of :data:`PRECISIONS` and whether the
    model is compiled.

    ``fp32`` trains in float32 as today; ``bf16`` and ``fp16`` run the forward under
    ``torch.autocast`` (parameters and optimizer state stay float32), and ``fp16`` scales the loss
    with a ``torch.amp.GradScaler`` whose skipped steps never reach the optimizer.
    """

    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def default(self) -> bool:
        """CPU, float32, eager: today's training, the one the stacked engine reproduces."""
        return self.device == "cpu" and self.precision == "fp32" and not self.compile

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward's autocast context (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.torch_device.type, dtype=_AUTOCAST_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A fresh GradScaler for fp16, else None."""
        return torch.amp.GradScaler(self.torch_device.type) if self.precision == "fp16" else None


def _available(device: torch.device) -> str | None:
    """Why ``device`` cannot be used here, or None when it can."""
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "torch.cuda.is_available() is False on this machine"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}"
        return None
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else "torch.backends.mps.is_available() is False here"
    return f"choose {DEVICE_CHOICES}"


def resolve_device(spec: str) -> str:
    """``auto`` → ``cuda`` where CUDA is present, else ``cpu``; any other spec is checked.

    Raises:
        ValueError: (one line) the spec is malformed or the device is not on this machine.
    """
    spec = spec.strip()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device must be {DEVICE_CHOICES}, got {spec!r}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be {DEVICE_CHOICES}, got {spec!r}")
    why = _available(device)
    if why is not None:
        raise ValueError(f"device {spec!r} is not available: {why}")
    return str(device)


# The device this process trains on whatever a run's config says: one of ``compare --devices``,
# given to each worker process (pipeline/execution.py) so that every process has a device of its own.
_PROCESS_DEVICE: str | None = None


def set_process_device(device: str | None) -> None:
    """Make this process train on ``device`` (None: as each run's config says)."""
    global _PROCESS_DEVICE
    _PROCESS_DEVICE = None if device is None else resolve_device(device)


def process_device() -> str | None:
    """The device :func:`set_process_device` gave this process, or None."""
    return _PROCESS_DEVICE


def resolve_placement(device: str = "auto", precision: str = "fp32", compile: bool = False) -> Placement:
    """A checked :class:`Placement` (see :func:`resolve_device`) on ``device``, or on this
    process's own device where :func:`set_process_device` gave it one."""
    return Placement(_PROCESS_DEVICE or resolve_device(device), precision, bool(compile))


def device_record(placement: Placement) -> dict[str, Any]:
    """What results.json records about where the runs computed."""
    device = placement.torch_device
    record: dict[str, Any] = {"device": placement.device, "precision": placement.precision,
                              "compile": placement.compile, "torch": torch.__version__}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        record.update(name=torch.cuda.get_device_name(index), compute_capability=f"{major}.{minor}",
                      cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:
        record.update(name=platform.processor() or platform.machine(), compute_capability=None,
                      cuda=torch.version.cuda, cudnn=None)
    return record
