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

__all__ = ["TrialRecord", "ArmResults", "Results", "atomic_write_text", "atomic_write_bytes", "write_json", "read_json",
           "versions", "check_results", "check_suite"]

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


# -- the shape of results.json and suite.json, checked before a report is built from one ---------------

class _Shape:
    """Checks one file's data against the schema; the first mismatch is a ValueError that names
    the file, the key path and what was expected."""

    def __init__(self, path: Path | str, kind: str) -> None:
        self.path, self.kind = path, kind

    def fail(self, where: str, what: str, value: Any) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ValueError(f"{self.path} is not a valid {self.kind} file: {where} must be {what}, got {shown}")

    def table(self, value: Any, where: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, "a table (JSON object)", value)
        for key in keys:
            if key not in value:
                self.fail(f"{where}.{key}" if where else key, "present", "nothing")
        return value

    def number(self, value: Any, where: str, *, optional: bool = False) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(where, "a number" + (" or null" if optional else ""), value)

    def integer(self, value: Any, where: str, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.fail(where, f"an integer >= {low}", value)
        return value

    def text(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            self.fail(where, "a string", value)

    def items(self, value: Any, where: str, *, nonempty: bool = False) -> list[Any]:
        if not isinstance(value, list) or (nonempty and not value):
            self.fail(where, "a non-empty list" if nonempty else "a list", value)
        return value

    def curve(self, value: Any, where: str, length: int) -> None:
        for i, point in enumerate(self.items(value, where, nonempty=True)):
            self.number(point, f"{where}[{i}]", optional=True)
        if len(value) > length:  # a diverged run's curve ends where it diverged
            self.fail(where, f"at most {length} values (epoch 0 to config.epochs)", f"{len(value)} values")

    def run(self, value: Any, where: str, epochs: int) -> None:
        run = self.table(value, where, ("val_loss_curve",))
        # A step budget or an evaluation interval indexes the curve by eval_steps instead of epochs.
        steps = run.get("eval_steps")
        self.curve(run["val_loss_curve"], f"{where}.val_loss_curve",
                   len(steps) if isinstance(steps, list) else epochs + 1)
        for key in ("val_loss", "test_loss", "test_accuracy"):
            if key in run:
                self.number(run[key], f"{where}.{key}", optional=True)
        if "wall_s" in run:
            self.number(run["wall_s"], f"{where}.wall_s")

    def results(self, data: Any, prefix: str = "") -> None:
        at = (lambda key: f"{prefix}{key}")
        top = self.table(data, prefix.rstrip("."), ("config", "versions", "optimizers"))
        config = self.table(top["config"], at("config"), ("workload", "epochs", "seed"))
        self.text(config["workload"], at("config.workload"))
        epochs = self.integer(config["epochs"], at("config.epochs"), 1)
        self.integer(config["seed"], at("config.seed"), 0)
        versions = self.table(top["versions"], at("versions"))
        for name, version in versions.items():
            if version is not None:
                self.text(version, at(f"versions.{name}"))
        arms = self.table(top["optimizers"], at("optimizers"))
        if not arms:
            self.fail(at("optimizers"), "a table of at least one arm", arms)
        for name, arm in arms.items():
            where = at(f"optimizers.{name}")
            self.table(arm, where, ("best_lr", "best_value", "trials", "final"))
            self.number(arm["best_lr"], f"{where}.best_lr", optional=True)
            self.number(arm["best_value"], f"{where}.best_value")
            for i, trial in enumerate(self.items(arm["trials"], f"{where}.trials")):
                t = self.table(trial, f"{where}.trials[{i}]", ("number", "lr", "value", "state"))
                self.integer(t["number"], f"{where}.trials[{i}].number", 0)
                self.number(t["lr"], f"{where}.trials[{i}].lr", optional=True)
                self.number(t["value"], f"{where}.trials[{i}].value", optional=True)
                self.text(t["state"], f"{where}.trials[{i}].state")
                for key, kind in (("params", dict), ("study", int)):
                    if key in t and (not isinstance(t[key], kind) or isinstance(t[key], bool)):
                        self.fail(f"{where}.trials[{i}].{key}", "a table" if kind is dict else "an integer", t[key])
            self.run(arm["final"], f"{where}.final", epochs)
            for i, seed in enumerate(self.items(arm["final"].get("seeds", [arm["final"]]), f"{where}.final.seeds",
                                                nonempty=True)):
                self.run(seed, f"{where}.final.seeds[{i}]", epochs)
            for key in ("best_params", "space", "source"):
                if key in arm and arm[key] is not None:
                    self.table(arm[key], f"{where}.{key}")


def check_results(data: Any, path: Path | str = "results.json") -> None:
    """Refuse data that is not a results.json as the pipeline writes it (the keys and types the
    report reads): a ValueError naming ``path``, the key and what it must be."""
    _Shape(path, "results").results(data)


def check_suite(data: Any, path: Path | str = "suite.json") -> None:
    """Refuse data that is not a suite.json: its config, versions, and a results table per workload."""
    shape = _Shape(path, "suite")
    top = shape.table(data, "", ("config", "versions", "workloads"))
    shape.table(top["config"], "config")
    shape.table(top["versions"], "versions")
    workloads = shape.table(top["workloads"], "workloads")
    if not workloads:
        shape.fail("workloads", "a table of at least one workload", workloads)
    for name, results in workloads.items():
        shape.results(results, f"workloads.{name}.")
    if "fidelity" in top:
        for name, fidelity in shape.table(top["fidelity"], "fidelity").items():
            shape.table(fidelity, f"fidelity.{name}")


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


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write via a temporary file and ``os.replace``: a kill leaves the old file or the new one.
    ``mode``: the file's permissions (default: 0o666 less the umask, as ``open`` would give)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp's 0600 would make results private by accident
        os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)
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
