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

Questions (``question=``, ``hessian-lr suite --question``): presets of the arms that answer one of the
write-up's two open questions (:func:`question_arms`), recorded in suite.json's config so that the
report says which question the suite was run to answer:

* ``estimators`` — would a better curvature estimate help? ``adam``, ``sgd``, and each wrapped with
  every registered estimator (``hessian-<base>`` for grad-diff, ``hessian-<base>-<estimator>``);
* ``bases`` — would other base optimizers? ``adam``, ``sgd``, ``adamw``, ``lion``, ``adabelief``,
  ``soap``, each bare and wrapped with grad-diff (``hessian-<base>``).

A question sets the arms: naming optimizers as well is refused unless they are exactly the
question's arms (so a command never runs something other than what it asks). Every
workload's fidelity study measures every estimator the arms use, besides the default ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hessian_lr.arms import Arm, get_arm
from hessian_lr.config import CompareConfig, add_declared_arms, drop_default_training_options
from hessian_lr.pipeline.execution import Progress, ProgressEvent, no_progress
from hessian_lr.pipeline.store import RunStore
from hessian_lr.results import read_json, versions, write_json
from hessian_lr.imports import is_import_path
from hessian_lr.workloads import WORKLOADS, get_workload
from hessian_lr.workloads.registry import DATA_WORKLOADS

__all__ = ["SuiteConfig", "run_suite", "write_suite", "SUITE_FILE", "parse_workloads", "QUESTIONS", "question_arms",
           "DEFAULT_OPTIMIZERS", "fidelity_estimators"]

SUITE_FILE = "suite.json"
SUITE_SCHEMA = 1
FIDELITY_DIR = "fidelity"
DEFAULT_OPTIMIZERS = ("adam", "hessian-adam", "sgd", "hessian-sgd")
QUESTIONS = ("estimators", "bases")
ESTIMATOR_QUESTION_BASES = ("adam", "sgd")
BASES_QUESTION_BASES = ("adam", "sgd", "adamw", "lion", "adabelief", "soap")


def question_arms(question: str) -> tuple[str, ...]:
    """The arms a question's preset runs (the first, ``adam``, is the baseline).

    Args:
        question: ``"estimators"`` or ``"bases"`` (see the module docstring).

    Returns:
        ``estimators``: the bases, then per base ``hessian-<base>`` and ``hessian-<base>-<estimator>``
        for every other estimator of :data:`hessian_lr.optim.estimators.ESTIMATORS`, in its order;
        ``bases``: the bases bare, then each wrapped (``hessian-<base>``), in the same order.

    Raises:
        ValueError: an unknown question.
    """
    from hessian_lr.arms.names import REFERENCE_ESTIMATOR, wrapped_name
    from hessian_lr.optim.estimators import ESTIMATORS

    if question == "estimators":
        others = [e for e in ESTIMATORS if e != REFERENCE_ESTIMATOR]
        return (*ESTIMATOR_QUESTION_BASES,
                *(arm for base in ESTIMATOR_QUESTION_BASES
                  for arm in (wrapped_name(base), *(wrapped_name(base, e) for e in others))))
    if question == "bases":
        return (*BASES_QUESTION_BASES, *(wrapped_name(base) for base in BASES_QUESTION_BASES))
    raise ValueError(f"question must be one of {', '.join(QUESTIONS)}, got {question!r}")


def parse_workloads(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"all"`` or comma-separated names (or a list) -> validated names in order; import paths
    ``package.module:name`` of workloads of your own are imported (and refused in one line if
    they name no workload)."""
    if isinstance(names, str):
        items = list(WORKLOADS) if names.strip() == "all" else names.split(",")
    elif isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        items = list(names)
    else:
        raise ValueError(f"workloads must be 'all' or a comma-separated list of names, got {names!r}")
    cleaned = tuple(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not cleaned:
        raise ValueError("workloads must name at least one workload")
    for name in cleaned:
        if is_import_path(name):
            get_workload(name)
    unknown = [n for n in cleaned if n not in WORKLOADS and n not in DATA_WORKLOADS and not is_import_path(n)]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; choose from all, {', '.join(WORKLOADS)}, "
                         f"{', '.join(DATA_WORKLOADS)} (data from --data-dir)")
    return cleaned


@dataclass(frozen=True)
class SuiteConfig:
    """A suite: compare's settings (minus the workload and the folder) plus the workloads.

    Defaults differ from compare's where a suite needs it: 5 paired seeds, no equal-lr ablation
    (it multiplies the final runs by the number of arms), the study prefix ``suite``, and the
    fidelity study of every workload on. Every workload uses its own default budget (epochs).
    ``question`` (``estimators`` or ``bases``) sets the optimizers to :func:`question_arms`; without
    it (and without ``optimizers``) they are :data:`DEFAULT_OPTIMIZERS`.
    """

    workloads: tuple[str, ...] = tuple(WORKLOADS)
    optimizers: tuple[str, ...] | None = None  # None: the question's arms, else DEFAULT_OPTIMIZERS
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
    question: str | None = None
    device: str = "auto"  # as compare's: every workload's runs train there
    precision: str = "fp32"
    compile: bool = False
    devices: tuple[str, ...] = ()  # as compare's: one worker process per device

    def __post_init__(self) -> None:
        object.__setattr__(self, "workloads", parse_workloads(self.workloads))
        object.__setattr__(self, "optimizers", self._resolved_optimizers())
        if not isinstance(self.fidelity, bool):
            raise ValueError(f"fidelity must be true or false, got {self.fidelity!r}")
        if not isinstance(self.out, (str, Path)) or not str(self.out).strip():
            raise ValueError(f"out must be a folder path, got {self.out!r}")
        object.__setattr__(self, "out", Path(self.out))
        for workload in self.workloads:  # every compare setting is validated before anything runs
            self.compare_config(workload)

    def _resolved_optimizers(self) -> tuple[str, ...]:
        """The optimizers: as named, the question's, or the default; a question with other arms is refused."""
        if self.question is None:
            return DEFAULT_OPTIMIZERS if self.optimizers is None else self.optimizers
        if self.question not in QUESTIONS:
            raise ValueError(f"question must be one of {', '.join(QUESTIONS)}, got {self.question!r}")
        preset = question_arms(self.question)
        named = self.optimizers.split(",") if isinstance(self.optimizers, str) else self.optimizers
        if named is not None and tuple(n.strip() for n in named) != preset:
            raise ValueError(f"optimizers conflict with question {self.question!r}, which runs its own arms "
                             f"({','.join(preset)}): give the question or the optimizers, not both")
        return preset

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
        drop_default_training_options(data)
        data.pop("devices", None)  # as compare's config: where this machine's processes ran
        return data

    def updated(self, **changes: Any) -> SuiteConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _fidelity(config: SuiteConfig, workload: str) -> dict[str, Any] | None:
    """The workload's fidelity study (reduced settings), reused if a previous run finished it;
    None for a workload without an exact Hessian diagonal (curvature route ``"none"``)."""
    from hessian_lr.analysis.fidelity import suite_fidelity

    if get_workload(workload).curvature == "none":
        return None
    folder = config.out / workload / FIDELITY_DIR
    path = folder / "fidelity.json"
    wanted = fidelity_estimators(config.optimizers, config.compare_config(workload).arm)
    if path.exists():
        try:
            found = read_json(path)
        except (OSError, ValueError):
            found = None  # torn by a kill mid-write: computed again
        measured = set((found or {}).get("estimators") or {}) | set((found or {}).get("skipped") or {})
        if found is not None and set(wanted) <= measured:
            return found
        path.unlink()  # torn, or a study of fewer estimators than these arms use
    return suite_fidelity(folder, workload, seed=config.seed, estimators=wanted)


def fidelity_estimators(arms: tuple[str, ...], resolve: Callable[[str], Arm] = get_arm) -> tuple[str, ...]:
    """The fidelity study's estimators: the default ones, then any other that a wrapped arm uses
    (by name, or declared by an ``[arms.NAME]`` table: ``resolve`` is the run's arm lookup)."""
    from hessian_lr.analysis.fidelity import DEFAULT_ESTIMATORS

    used = [wrapping.estimator for arm in arms if (wrapping := resolve(arm).wraps) is not None]
    return tuple(dict.fromkeys([*DEFAULT_ESTIMATORS, *used]))


def run_suite(config: SuiteConfig, progress: Progress = no_progress) -> dict[str, Any]:
    """Run every workload's comparison (and fidelity study), write ``suite.json`` and the suite
    report into ``config.out``, and return the suite dict."""
    from hessian_lr.pipeline.compare import check_spaces, prepare_storage, publish_plan, run_compare
    from hessian_lr.pipeline.plan import mark_done, set_current

    store = RunStore(config.out)
    compares = [config.compare_config(w) for w in config.workloads]
    for compare in compares:  # every space against every workload's model, before any training
        check_spaces(compare)
    with store.exclusive():
        store.write_config(config.to_dict())
        plan_study = publish_plan(compares)  # what `hessian-lr worker` follows (database storages)
        for compare in compares:  # every study made up front, before processes race to make them
            prepare_storage(compare)
        workloads: dict[str, Any] = {}
        fidelity: dict[str, Any] = {}
        walls: dict[str, float] = {}
        for workload, compare in zip(config.workloads, compares):
            start = time.perf_counter()
            def tagged(event: ProgressEvent, workload: str = workload) -> None:
                progress(ProgressEvent(f"{workload}/{event.task}", event.kind, event.trial, event.value, event.count))

            if plan_study is not None:
                set_current(plan_study, compares.index(compare))
            results = run_compare(compare, progress=tagged, publish=False)
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
        if plan_study is not None:
            mark_done(plan_study)
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
