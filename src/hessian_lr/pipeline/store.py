"""The run store: what a run folder holds and how its files are named, read, written and locked.

A run folder (``--out``) holds ``config.json``, the Optuna journal (unless ``--storage`` puts the
studies elsewhere), one JSON file per finished final run under ``runs/`` (what resuming reuses),
and the outputs (``results.json``, ``trials.csv``, the report). Everything is written atomically
(a temporary file, then ``os.replace``), so a kill leaves the old file or the new one. A run
file that cannot be read back (a disk filled mid-write by something else, a hand edit) is moved
aside as ``*.corrupt`` and its run trained again, never silently reused or fatal to every rerun.

On a database storage the final runs are jobs of the storage instead (any process of any
machine may train them, :mod:`hessian_lr.tuning.jobs`), and :class:`SharedRuns` reads their
results back.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hessian_lr.results import read_json, write_json

__all__ = ["FinalRun", "RunStore", "SharedRuns", "hyperparameters_text"]


def hyperparameters_text(hyperparameters: Mapping[str, Any]) -> str:
    """Canonical JSON of a hyperparameter dict (tuples as lists): equal settings, equal text."""
    return json.dumps(hyperparameters, sort_keys=True, default=list)


@dataclass(frozen=True)
class FinalRun:
    """One final training run of an arm (a tuned setting, or another arm's lr in the ablation)."""

    arm: str
    hyperparameters_json: str  # hyperparameters_text(...) of the optimizer's constructor arguments
    seed: int
    epochs: int
    workload: str
    # A digest of the arm's [arms.NAME] table for a declared arm ("" otherwise): the same name
    # declared with another base, estimator or options is another run, never a stored one reused.
    declaration: str = ""

    @classmethod
    def of(cls, arm: str, hyperparameters: Mapping[str, Any], seed: int, epochs: int, workload: str,
           declaration: Mapping[str, Any] | None = None) -> FinalRun:
        digest = hashlib.sha256(hyperparameters_text(declaration).encode()).hexdigest()[:8] if declaration else ""
        return cls(arm, hyperparameters_text(hyperparameters), seed, epochs, workload, digest)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return json.loads(self.hyperparameters_json)

    @property
    def key(self) -> str:
        """The run file's name: readable where it can be, a hash of the settings where not."""
        arm = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.arm)
        digest = hashlib.sha256(self.hyperparameters_json.encode()).hexdigest()[:12]
        lr = self.hyperparameters.get("lr")
        lr_text = f".lr{lr!r}" if isinstance(lr, float) else ""
        declared = f".d{self.declaration}" if self.declaration else ""
        return f"{self.workload}.{arm}{declared}{lr_text}.hp{digest}.seed{self.seed}.e{self.epochs}"


class RunStore:
    """The files of one run folder."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)

    @property
    def journal(self) -> Path:
        return self.out / "optuna.journal"

    @property
    def where(self) -> str:
        """Where the results are, for messages."""
        return str(self.out / "runs")

    def run_path(self, run: FinalRun) -> Path:
        return self.out / "runs" / f"{run.key}.json"

    def has(self, run: FinalRun) -> bool:
        return self.load(run) is not None

    def load(self, run: FinalRun) -> dict[str, Any] | None:
        """The saved result of ``run``, or None if there is none or it cannot be read (then it is
        moved aside as ``<name>.corrupt`` so that the run is trained again)."""
        path = self.run_path(run)
        if not path.exists():
            return None
        try:
            data = read_json(path)
            if not isinstance(data, dict) or "val_loss_curve" not in data:
                raise ValueError("not a run result")
        except (OSError, ValueError):
            path.replace(path.with_name(path.name + ".corrupt"))
            return None
        return data

    def save(self, run: FinalRun, result: Mapping[str, Any]) -> None:
        write_json(self.run_path(run), dict(result))

    def write_config(self, config: Mapping[str, Any]) -> None:
        write_json(self.out / "config.json", dict(config))

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold ``out/.lock`` so two compare commands never share a run folder by accident (the
        kernel drops the lock when its process dies: a killed run leaves no stale lock)."""
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"another hessian-lr process is using {self.out}") from None
            yield


class SharedRuns:
    """The results of final runs trained as jobs of a database storage's finals study (each job a
    batch of runs; see :func:`hessian_lr.pipeline.compare.train_finals`)."""

    def __init__(self, study: Any) -> None:
        self.study = study
        self._results: dict[str, dict[str, Any]] = {}

    @property
    def where(self) -> str:
        return f"the storage's study {self.study.study_name}"

    def _refresh(self) -> None:
        from hessian_lr.tuning.jobs import PAYLOAD_ATTR, RESULT_ATTR, finished_jobs

        for trial in finished_jobs(self.study):
            for run, result in zip(trial.user_attrs[PAYLOAD_ATTR], trial.user_attrs.get(RESULT_ATTR) or []):
                self._results.setdefault(FinalRun(**run).key, result)

    def load(self, run: FinalRun) -> dict[str, Any] | None:
        """The stored result of ``run``, or None if no finished job holds it."""
        if run.key not in self._results:
            self._refresh()
        return self._results.get(run.key)

    def has(self, run: FinalRun) -> bool:
        return self.load(run) is not None
