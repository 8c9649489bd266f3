"""The comparison's configuration: defaults < TOML file < command-line flags, validated once."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from hessian_lr.arms import parse_arm_names
from hessian_lr.workloads import get_workload

__all__ = ["CompareConfig", "load_toml", "available_cores"]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset), which can
    be fewer than the machine's ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


@dataclass(frozen=True)
class CompareConfig:
    """Everything that defines a ``compare`` run (``out`` and ``storage`` say where it lives)."""

    workload: str = "mnist1d-mlp"
    optimizers: tuple[str, ...] = ("adam", "hessian-adam")
    trials: int = 20
    epochs: int | None = None  # None = the workload's default budget (20 for mnist1d-mlp)
    seed: int = 0
    lr_low: float = 1e-4
    lr_high: float = 1e-1
    seeds: int = 1  # final runs per arm (seeds seed .. seed+seeds-1), paired across arms
    ablation: bool = False  # also train every arm at every other arm's tuned lr
    threads: int | None = None  # intra-op threads per process; None = automatic (see below)
    workers: int = 0  # processes; 0 = automatic (see below)
    batch_trials: int = 1  # models trained at once with torch.func (1 = one trial at a time)
    batch_startup: bool = True  # train TPE's 10 random start-up trials as one batch (same lrs)
    storage: str | None = None  # Optuna storage URL or journal path; None = DIR/optuna.journal
    study: str = "compare"  # prefix of the study names (one study per arm)
    out: Path = Path("runs/compare")

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizers", parse_arm_names(self.optimizers))
        object.__setattr__(self, "out", Path(self.out))
        if self.epochs is None:
            object.__setattr__(self, "epochs", get_workload(self.workload).epochs)
        else:
            get_workload(self.workload)
        for name in ("trials", "epochs", "seeds", "batch_trials"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = automatic), got {self.workers!r}")
        # Automatic placement. Sequential training of a tiny model is Python-bound: one thread per
        # process and one process per arm. Batched training is GEMM-bound and its matrix products
        # release the GIL: one process whose arms train side by side in threads ("lanes", see
        # ``lanes``), the cores shared out as intra-op threads, which spares a second process's
        # ~1-3 s start-up. Arms that cannot batch keep the sequential placement.
        cores = available_cores()
        if self.workers == 0:
            workers = 1 if self.batched else max(1, min(len(self.optimizers), cores))
            object.__setattr__(self, "workers", workers)
        if self.threads is None:
            threads = max(1, cores // min(len(self.optimizers), cores)) if self.batched and self.workers == 1 else 1
            object.__setattr__(self, "threads", threads)
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1:
            raise ValueError(f"threads must be a positive integer, got {self.threads!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.study, str) or not self.study or "." in self.study:
            raise ValueError(f"study must be a non-empty name without '.', got {self.study!r}")
        if not (0 < self.lr_low < self.lr_high):
            raise ValueError(f"lr range must satisfy 0 < lr_low < lr_high, got [{self.lr_low}, {self.lr_high}]")

    @cached_property  # builds a throwaway model per arm: asked by __post_init__ and lanes
    def batched(self) -> bool:
        """Whether every arm trains batched (``batch_trials`` > 1 and each arm and the workload's
        model are reproducible on stacked parameters: :func:`~hessian_lr.training.batched.can_batch`)."""
        if self.batch_trials < 2:
            return False
        from hessian_lr.training.batched import can_batch

        workload = get_workload(self.workload)
        return all(can_batch(arm, workload) for arm in self.optimizers)

    @property
    def lanes(self) -> int:
        """How many of its tasks (an arm's trials and finals) one process runs at once, in
        threads: with batched training, as many as its cores hold at ``threads`` intra-op threads
        each; sequential training is Python-bound (the GIL), so one."""
        if not self.batched or self.workers != 1:
            return 1
        return max(1, min(len(self.optimizers), available_cores() // self.threads))

    @property
    def final_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    def study_fingerprint(self) -> str:
        """Hash of what changes a trial's outcome; a study is only resumed under the same one.

        ``trials`` is not part of it: asking for more trials extends a finished study.
        """
        key = {k: getattr(self, k) for k in ("workload", "epochs", "seed", "lr_low", "lr_high")}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["optimizers"] = list(self.optimizers)
        data["out"] = str(self.out)
        return data

    def updated(self, **changes: Any) -> CompareConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config (keys as the CLI's long options, ``-`` or ``_``); unknown keys are errors."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ValueError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"invalid TOML in config file {path}: {exc}") from None
    allowed = {f.name for f in fields(CompareConfig)}
    data = {key.replace("-", "_"): value for key, value in raw.items()}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) in config file {path}: {', '.join(unknown)}")
    if isinstance(data.get("optimizers"), str):
        data["optimizers"] = data["optimizers"].split(",")
    return data
