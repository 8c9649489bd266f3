"""The results schema, defined once: the pipeline writes it, the report reads it.

``results.json``::

    {"schema": 2,
     "config": {...CompareConfig...},
     "versions": {"python", "torch", "optuna", "numpy", "scipy", "mnist1d", "hessian-lr", and every
                  package an arm imported},
     "optimizers": {name: {"best_lr", "best_value", "best_params",
                           "space": {hyperparameter: dimension},
                           "source": {"source", "packages": {package: {"distribution", "version"}}},
                           "trials": [{"number", "lr", "params", "value", "state", "study"}],
                           "studies": [{"study", "best_value", "best_params", "final"}] (with --studies > 1),
                           "final": {"lr", "hyperparameters", "seed", "epochs", "val_loss_curve",
                                     "val_loss", "test_loss", "test_accuracy", "wall_s",
                                     "epoch_wall_s", "steps_per_epoch", "diverged"}}}}

``number`` is a trial's position among its study's finished trials (0-based); ``params`` the
point of the arm's search space it trained (``lr`` repeats ``params["lr"]``, None when the arm's
space has no lr).

Non-finite numbers are written as ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["TrialRecord", "ArmResults", "Results", "atomic_write_text", "atomic_write_bytes", "write_json", "read_json", "versions"]

SCHEMA_VERSION = 2


@dataclass
class TrialRecord:
    number: int
    lr: float | None
    value: float | None  # None: failed (diverged) or not finished
    state: str  # optuna TrialState name: COMPLETE, FAIL, RUNNING, ...
    params: dict[str, Any] = field(default_factory=dict)
    study: int = 0  # which of the arm's independent tuning studies


@dataclass
class ArmResults:
    best_lr: float | None
    best_value: float
    trials: list[TrialRecord]
    final: dict[str, Any]  # a training.RunResult as a dict (+ "seeds": the K per-seed run dicts)
    best_params: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)  # SearchSpace.to_json()
    source: dict[str, Any] = field(default_factory=dict)  # arms.provenance(arm)
    studies: list[dict[str, Any]] = field(default_factory=list)  # per tuning study, with --studies > 1
    # Seed statistics (hessian_lr.report.summary.summarize): written flat into the arm's dict
    # (val_loss_mean, val_loss_ci95, ...); every other key of an arm's dict reads back into it.
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {"best_lr": self.best_lr, "best_value": self.best_value, "best_params": self.best_params,
                "space": self.space, "source": self.source, "trials": [asdict(t) for t in self.trials],
                "final": self.final}
        if self.studies:
            data["studies"] = self.studies
        data.update(self.summary)
        return data


ARM_KEYS = ("best_lr", "best_value", "best_params", "space", "source", "trials", "studies", "final")


@dataclass
class Results:
    config: dict[str, Any]
    versions: dict[str, str]
    optimizers: dict[str, ArmResults]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"schema": SCHEMA_VERSION, "config": self.config, "versions": self.versions,
               "optimizers": {name: arm.to_dict() for name, arm in self.optimizers.items()}}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Results:
        known = {"schema", "config", "versions", "optimizers"}
        optimizers = {
            name: ArmResults(
                best_lr=arm["best_lr"],
                best_value=arm["best_value"],
                trials=[TrialRecord(**t) for t in arm["trials"]],
                final=arm["final"],
                best_params=arm.get("best_params") or ({"lr": arm["best_lr"]} if arm.get("best_lr") else {}),
                space=arm.get("space") or {},
                source=arm.get("source") or {},
                studies=arm.get("studies") or [],
                summary={k: v for k, v in arm.items() if k not in ARM_KEYS},
            )
            for name, arm in data["optimizers"].items()
        }
        return cls(config=data["config"], versions=data["versions"], optimizers=optimizers,
                   extra={k: v for k, v in data.items() if k not in known})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and ``os.replace``: a kill leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make results private by accident
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


CORE_DISTRIBUTIONS = ("torch", "optuna", "numpy", "scipy", "mnist1d", "hessian-lr")


def version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Python's version and those of the distributions the results depend on: the core ones and
    ``extra`` (``{distribution: version}``, e.g. every package an arm imported)."""
    found = {"python": platform.python_version(), **{name: version_of(name) for name in CORE_DISTRIBUTIONS}}
    for name, version in sorted((extra or {}).items()):
        found.setdefault(name, version)
    return found
