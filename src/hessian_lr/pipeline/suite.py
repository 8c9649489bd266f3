"""The workload suite: compare's protocol for every (workload, arm), one report across them.

Researchers read optimizer claims against suites (DeepOBS, Schneider et al. 2019; AlgoPerf,
Dahl et al. 2023, scored by performance profiles), not one dataset. :func:`run_suite` runs
:func:`~hessian_lr.pipeline.compare.run_compare` for each workload into ``OUT/<workload>/`` — each
with the same arms, search spaces, budgets and seeds — and the estimator-fidelity study of each
workload into ``OUT/<workload>/fidelity/``; then it writes ``suite.json`` (the config, versions,
every workload's results and fidelity) and the suite report (``suite.md``, ``suite.html``,
``profiles.png``; :mod:`hessian_lr.report.suite`).

Resuming: every stage keeps its finished work on disk (each workload's studies and final runs, as
compare does; each fidelity.json), so the same command run again after a kill continues where it
stopped (``wall_s`` then records each workload's seconds in this run: the time it took to
finish it, not to redo what was already done). All workloads' studies live in one storage
(``OUT/optuna.journal`` or ``--storage``), named
``<study>.<workload>.<arm>.<fingerprint>``, so ``hessian-lr worker --storage URL --study <study>``
joins the whole suite.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hessian_lr.config import CompareConfig, add_declared_arms
from hessian_lr.pipeline.execution import Progress, ProgressEvent, no_progress
from hessian_lr.pipeline.store import RunStore
from hessian_lr.results import read_json, versions, write_json
from hessian_lr.workloads import WORKLOADS

__all__ = ["SuiteConfig", "run_suite", "write_suite", "SUITE_FILE", "parse_workloads"]

SUITE_FILE = "suite.json"
SUITE_SCHEMA = 1
FIDELITY_DIR = "fidelity"


def parse_workloads(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"all"`` or comma-separated names (or a list) -> validated names in order."""
    if isinstance(names, str):
        items = list(WORKLOADS) if names.strip() == "all" else names.split(",")
    elif isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        items = list(names)
    else:
        raise ValueError(f"workloads must be 'all' or a comma-separated list of names, got {names!r}")
    cleaned = tuple(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not cleaned:
        raise ValueError("workloads must name at least one workload")
    unknown = [n for n in cleaned if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; choose from all, {', '.join(WORKLOADS)}")
    return cleaned


@dataclass(frozen=True)
class SuiteConfig:
    """A suite: compare's settings (minus the workload and the folder) plus the workloads.

    Defaults differ from compare's where a suite needs it: 5 paired seeds, no equal-lr ablation
    (it multiplies the final runs by the number of arms), the study prefix ``suite``, and the
    fidelity study of every workload on. Every workload uses its own default budget (epochs).
    """

    workloads: tuple[str, ...] = tuple(WORKLOADS)
    optimizers: tuple[str, ...] = ("adam", "hessian-adam", "sgd", "hessian-sgd")
    trials: int = 20
    seed: int = 0
    lr_low: float = 1e-4
    lr_high: float = 1e-1
    space: str = "default"
    spaces: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    arms: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # [arms.NAME] tables, as compare's
    seeds: int = 5
    ablation: bool = False
    studies: int = 1
    threads: int | None = None
    workers: int = 0
    batch_trials: int = 1
    batch_startup: bool = True
    storage: str | None = None
    study: str = "suite"
    fidelity: bool = True
    out: Path = Path("runs/suite")

    def __post_init__(self) -> None:
        object.__setattr__(self, "workloads", parse_workloads(self.workloads))
        if not isinstance(self.fidelity, bool):
            raise ValueError(f"fidelity must be true or false, got {self.fidelity!r}")
        if not isinstance(self.out, (str, Path)) or not str(self.out).strip():
            raise ValueError(f"out must be a folder path, got {self.out!r}")
        object.__setattr__(self, "out", Path(self.out))
        for workload in self.workloads:  # every compare setting is validated before anything runs
            self.compare_config(workload)

    @property
    def storage_spec(self) -> str:
        return self.storage or str(self.out / "optuna.journal")

    def compare_config(self, workload: str) -> CompareConfig:
        """The comparison run for ``workload`` (into ``OUT/<workload>``, on the suite's storage)."""
        shared = {f.name: getattr(self, f.name) for f in fields(CompareConfig)
                  if f.name in {g.name for g in fields(SuiteConfig)} and f.name not in ("out", "storage")}
        return CompareConfig(**shared, workload=workload, out=self.out / workload, storage=self.storage_spec)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["workloads"], data["optimizers"], data["out"] = list(self.workloads), list(self.optimizers), str(self.out)
        data["spaces"] = {arm: dict(space) for arm, space in self.spaces.items()}
        add_declared_arms(data, self.arms)
        return data

    def updated(self, **changes: Any) -> SuiteConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _fidelity(config: SuiteConfig, workload: str) -> dict[str, Any] | None:
    """The workload's fidelity study (reduced settings), reused if a previous run finished it."""
    from hessian_lr.analysis.fidelity import suite_fidelity

    folder = config.out / workload / FIDELITY_DIR
    path = folder / "fidelity.json"
    if path.exists():
        try:
            return read_json(path)
        except (OSError, ValueError):
            path.unlink()  # torn by a kill mid-write: computed again
    return suite_fidelity(folder, workload, seed=config.seed)


def run_suite(config: SuiteConfig, progress: Progress = no_progress) -> dict[str, Any]:
    """Run every workload's comparison (and fidelity study), write ``suite.json`` and the suite
    report into ``config.out``, and return the suite dict."""
    from hessian_lr.pipeline.compare import check_spaces, run_compare

    store = RunStore(config.out)
    compares = [config.compare_config(w) for w in config.workloads]
    for compare in compares:  # every space against every workload's model, before any training
        check_spaces(compare)
    with store.exclusive():
        store.write_config(config.to_dict())
        workloads: dict[str, Any] = {}
        fidelity: dict[str, Any] = {}
        walls: dict[str, float] = {}
        for workload, compare in zip(config.workloads, compares):
            start = time.perf_counter()
            def tagged(event: ProgressEvent, workload: str = workload) -> None:
                progress(ProgressEvent(f"{workload}/{event.task}", event.kind, event.trial, event.value, event.count))

            results = run_compare(compare, progress=tagged)
            workloads[workload] = read_json(compare.out / "results.json")  # as written: summarized
            if config.fidelity:
                found = _fidelity(config, workload)
                if found is not None:
                    fidelity[workload] = found
                progress(ProgressEvent(f"{workload}/fidelity", "done"))
            del results
            walls[workload] = time.perf_counter() - start
        suite = {"schema": SUITE_SCHEMA, "config": config.to_dict(), "versions": _versions(workloads),
                 "workloads": workloads, "fidelity": fidelity, "wall_s": walls}
        write_suite(suite, config.out)
    return read_json(config.out / SUITE_FILE)


def _versions(workloads: Mapping[str, Any]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for results in workloads.values():
        merged.update(results.get("versions") or {})
    return {**versions(), **{k: v for k, v in merged.items() if k not in versions()}}


def write_suite(suite: dict[str, Any], out: Path) -> None:
    """``suite.json`` and the suite report (``hessian-lr report`` on a suite folder calls this)."""
    from hessian_lr.report.suite import summarize_suite, write_suite_report

    summarized = summarize_suite(suite)
    write_json(Path(out) / SUITE_FILE, summarized)
    write_suite_report(summarized, Path(out))
