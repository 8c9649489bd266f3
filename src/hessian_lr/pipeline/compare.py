"""The comparison pipeline: tune each arm on its own Optuna studies, train the best settings with
paired seeds (and, for the ablation, at the other arms' lrs), assemble and write the results.

Data flows one way: workload -> training -> tuning -> results.json -> report. Every stage keeps
its finished work on disk (the study storage; one file per final run, :mod:`.store`), so running
the same command again after an interruption redoes nothing that finished.

With ``studies`` > 1 each arm is tuned in that many independent studies (sampler seeds ``seed``,
``seed + 1``, ...; the same training seed for every trial), and each study's best setting gets its
own final runs: the spread across studies is the tuning luck the report shows. The arm's headline
result is that of its first study, as with one study.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hessian_lr import events
from hessian_lr.arms import Arm, check_space, provenance
from hessian_lr.config import CompareConfig
from hessian_lr.pipeline.execution import Progress, ProgressEvent, executor, no_progress
from hessian_lr.pipeline import plan as run_plan
from hessian_lr.pipeline.store import FinalRun, RunStore, SharedRuns
from hessian_lr.results import ArmResults, Results, TrialRecord, _json_safe, versions
from hessian_lr.training import Run, can_stack, initial_model, train
from hessian_lr.tuning import finished_trials, open_study, run_study, storage_for
from hessian_lr.tuning.space import Float, assemble_hyperparameters
from hessian_lr.tuning.jobs import Job, job_owners, work_until_done, work_while_waiting
from hessian_lr.tuning.storage import check_storage, display_storage, is_url
from hessian_lr.tuning.study import OWNER_ATTR, POLL_S, owner_identity, trial_point
from hessian_lr.workloads import get_workload
from hessian_lr.workloads.registry import workload_provenance

log = logging.getLogger("hessian_lr")

# Training turns on torch.set_flush_denormal; numpy (before 2.4) computes a float type's limits the
# first time they are asked and, with denormals flushed, warns that "the smallest subnormal ... is
# zero" (matplotlib asks when it draws the first figure). Asked now, they are cached correctly.
for _dtype in (np.float16, np.float32, np.float64):
    np.finfo(_dtype)

__all__ = ["run_compare", "run_worker", "study_name", "TuneTask", "FinalsTask", "plan_final_runs", "check_spaces",
           "tune_arm", "train_finals", "shares_finals", "final_store", "prepare_storage", "publish_plan", "who_ran_what"]


# -- studies -----------------------------------------------------------------------------------------

def study_name(config: CompareConfig, arm: str, study_index: int = 0) -> str:
    suffix = "" if study_index == 0 else f".s{study_index}"
    return f"{config.study}.{config.workload}.{arm}.{config.study_fingerprint(arm)}{suffix}"


@lru_cache(maxsize=None)
def _database(url: str) -> Any:
    return storage_for(url, Path("."))


def _storage(config: CompareConfig) -> Any:
    """The run's Optuna storage; a database's once per process (a new one per call would open a
    connection pool each time a worker looks at a study)."""
    return _database(config.storage) if is_url(config.storage) else storage_for(config.storage, config.out)


def _open(config: CompareConfig, arm: str, study_index: int):
    return open_study(_storage(config), study_name(config, arm, study_index),
                      config.study_fingerprint(arm),
                      attrs={"config": config.to_dict(), "arm": arm, "study_index": study_index})


def _hyperparameters(arm: Arm, point: dict[str, Any]) -> dict[str, Any]:
    return assemble_hyperparameters(point, arm.defaults)


@dataclass(frozen=True)
class TuneTask:
    """One process's share of one of an arm's studies (and, for the first such share, that
    study's final runs, which need nothing from the other arms: a fast arm never waits for a
    slow one)."""

    config: CompareConfig
    arm: str
    study_index: int = 0
    owns_study: bool = True  # the only process on the study: re-evaluates its interrupted trials
    train_finals: bool = True


@dataclass(frozen=True)
class FinalsTask:
    """Final runs of one arm whose results are not in the run store yet."""

    config: CompareConfig
    arm: str
    runs: tuple[FinalRun, ...]


def tune_arm(config: CompareConfig, arm_name: str, study_index: int = 0, *, owns_study: bool = True,
             progress: Progress = no_progress, worker: bool = False) -> None:
    """Run study ``study_index`` of ``arm_name`` until ``config.trials`` trials have finished.
    The trials this creates are owned by this process (and, unless ``worker``, by the run folder
    ``config.out``): see :mod:`hessian_lr.tuning.study`."""
    arm, workload = config.arm(arm_name), get_workload(config.workload, config.workload_options)
    space = config.arm_spaces[arm_name]
    study = _open(config, arm_name, study_index)

    def epoch(count: int) -> None:
        events.announce("epoch", arm_name)
        progress(ProgressEvent(arm_name, "epoch", count=count))

    def objective(points: Sequence[dict]) -> list[tuple[float | None, dict]]:
        # The study hands over the trials that may train together (a batch, or TPE's start-up).
        runs = [Run(_hyperparameters(arm, point), config.seed) for point in points]
        results = train(workload, arm, runs, epochs=config.epochs, evaluate_test=False, batch=config.batching,
                        progress=epoch, **config.training_options())
        return [(r.val_loss, {"val_loss_curve": r.val_loss_curve, "wall_s": r.wall_s}) for r in results]

    run_study(study, objective, n_trials=config.trials, space=space, seed=config.study_seed(study_index),
              batch_size=config.batch_trials, batch_startup=config.batch_startup, resume_running=owns_study,
              on_trial=lambda number, point, value: progress(ProgressEvent(arm_name, "trial", number, value)),
              owner=owner_identity(None if worker else config.out.resolve()))


def _trial_records(config: CompareConfig, arm: str, study_index: int) -> list[TrialRecord]:
    space = config.arm_spaces[arm]
    trials = finished_trials(_open(config, arm, study_index))[: config.trials]
    records = []
    for position, trial in enumerate(trials):
        point = trial_point(trial, space)
        records.append(TrialRecord(number=position, lr=point.get("lr"), value=trial.value, state=trial.state.name,
                                   params=point, study=study_index))
    return records


def _best(trials: list[TrialRecord], arm: str) -> TrialRecord:
    completed = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    if not completed:
        raise ValueError(f"all {len(trials)} trials of {arm} diverged; narrow its search space (e.g. --lr-high)")
    return min(completed, key=lambda t: (t.value, t.number))


# -- final runs --------------------------------------------------------------------------------------

def _tunes_lr(config: CompareConfig, arm: str) -> bool:
    return isinstance(config.arm_spaces[arm].get("lr"), Float)


def _workload_key(config: CompareConfig) -> str:
    """The workload as final runs name it: with a digest of a factory's options, if it has any, and
    of a step budget, evaluation interval or precision other than the default (they change a run's
    result as its epochs do)."""
    key = config.workload
    if config.workload_options:
        digest = hashlib.sha256(json.dumps(config.workload_options, sort_keys=True).encode()).hexdigest()[:8]
        key = f"{key}.o{digest}"
    budget = {name: getattr(config, name) for name, default in (("steps", None), ("eval_every", None),
                                                                ("precision", "fp32"))
              if getattr(config, name) != default}
    if budget:
        key = f"{key}.b{hashlib.sha256(json.dumps(budget, sort_keys=True).encode()).hexdigest()[:8]}"
    return key


def plan_final_runs(config: CompareConfig, best: dict[str, dict[str, Any]],
                    arms: Sequence[str] | None = None) -> dict[str, dict[str, list[FinalRun]]]:
    """``plan[arm][source]``: the runs of ``arm`` at ``source``'s tuned lr, one per seed.

    ``best[arm]`` is the arm's best point (its first study's). ``source == arm`` are the finals;
    the others (with ``config.ablation``) the equal-lr ablation: ``arm``'s own best setting with
    the lr replaced by ``source``'s (only between arms whose spaces tune the lr). ``arms`` limits
    the plan to those arms' own finals (the other arms' settings may not be known yet)."""
    arm_objects = {name: config.arm(name) for name in config.optimizers}
    plan: dict[str, dict[str, list[FinalRun]]] = {}
    for arm in arms or config.optimizers:
        sources = [arm]
        if config.ablation and arms is None and _tunes_lr(config, arm):
            sources += [s for s in config.optimizers if s != arm and _tunes_lr(config, s)]
        plan[arm] = {}
        for source in sources:
            point = dict(best[arm], lr=best[source]["lr"]) if source != arm else best[arm]
            hyperparameters = _hyperparameters(arm_objects[arm], point)
            plan[arm][source] = [FinalRun.of(arm, hyperparameters, seed, config.epochs, _workload_key(config),
                                             config.arms.get(arm)) for seed in config.final_seeds]
    return plan


def shares_finals(config: CompareConfig) -> bool:
    """Whether the final runs go through the storage (a database: any process on any machine may
    train them) rather than the run folder's store (a journal file: this run's processes)."""
    return is_url(config.storage)


def _train_runs(config: CompareConfig, runs: Sequence[FinalRun], progress: Progress) -> list[dict[str, Any]]:
    """Train final runs of one arm together (one batch of the engine) -> their results as stored."""
    results = train(get_workload(config.workload, config.workload_options), config.arm(runs[0].arm),
                    [Run(r.hyperparameters, r.seed) for r in runs], epochs=config.epochs, batch=config.batching,
                    progress=lambda count: progress(ProgressEvent("final", "epoch", count=count)),
                    **config.training_options())
    return [_json_safe(result.to_dict()) for result in results]


def _finals_study(config: CompareConfig):
    """The jobs study (:mod:`hessian_lr.tuning.jobs`) of a compare's final runs on a database
    storage: one job per batch of runs that train together. Its name's fingerprint covers what
    changes a run's result beyond the run itself: what changes the trials (every arm's study
    fingerprint: workload, budget, training options) and the training engine's batching."""
    key = {"studies": [config.study_fingerprint(arm) for arm in config.optimizers], "workload": _workload_key(config),
           "epochs": config.epochs, "batching": config.batching, "finals_batch": config.finals_batch}
    fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return open_study(_storage(config), f"{config.study}.{config.workload}.finals.{fingerprint}",
                      fingerprint, attrs={"config": config.to_dict(), "kind": "finals"})


def _final_jobs(config: CompareConfig, runs: Sequence[FinalRun]) -> dict[str, list[dict[str, Any]]]:
    """``job key -> payload``: the runs (of one arm) in batches of ``config.finals_batch`` where
    they train stacked — as one process trains them, so that a run's result does not depend on who
    trains it — and one run per job where they train one at a time anyway (a BatchNorm, dropout or
    loader-fed model: :func:`~hessian_lr.training.can_stack`), so that other processes can take them."""
    jobs: dict[str, list[dict[str, Any]]] = {}
    if not runs:
        return jobs
    stacked = config.batching and can_stack(get_workload(config.workload, config.workload_options),
                                            config.arm(runs[0].arm), config.placement)
    size = config.finals_batch if stacked else 1
    for start in range(0, len(runs), size):
        chunk = runs[start : start + size]
        digest = hashlib.sha256("|".join(run.key for run in chunk).encode()).hexdigest()[:10]
        jobs[f"{chunk[0].key}.x{len(chunk)}.{digest}"] = [asdict(run) for run in chunk]
    return jobs


def _final_job_runner(config: CompareConfig, progress: Progress):
    def run(job: Job) -> list[dict[str, Any]]:
        return _train_runs(config, [FinalRun(**run) for run in job.payload], progress)

    return run


def final_store(config: CompareConfig) -> RunStore | SharedRuns:
    """Where a compare's final-run results are kept: the storage (database) or the run folder."""
    return SharedRuns(_finals_study(config)) if shares_finals(config) else RunStore(config.out)


def train_finals(task: FinalsTask, progress: Progress = no_progress) -> None:
    """Train the task's runs that are not stored yet; each result is saved as it finishes
    (``config.finals_batch`` at a time: a kill loses at most one batch).

    On a database storage the batches are jobs of the storage that any process of the run and
    any worker may take (:mod:`hessian_lr.tuning.jobs`): this process queues the missing ones and
    takes queued ones until all of the task's are done, wherever they were trained."""
    config = task.config
    if shares_finals(config):
        work_until_done(_finals_study(config), _final_jobs(config, task.runs), _final_job_runner(config, progress),
                        owner_identity(config.out.resolve()))
        return
    store = RunStore(config.out)
    todo = [run for run in task.runs if not store.has(run)]
    for chunk in _final_jobs(config, todo).values():
        runs = [FinalRun(**run) for run in chunk]
        for run, result in zip(runs, _train_runs(config, runs, progress)):
            store.save(run, result)
            events.announce("final-saved", run.key)


def _study_finals(config: CompareConfig, arm: str, study_index: int) -> list[FinalRun]:
    best = _best(_trial_records(config, arm, study_index), arm)
    return plan_final_runs(config, {arm: best.params}, arms=(arm,))[arm][arm]


def tune_and_train_finals(task: TuneTask, progress: Progress = no_progress) -> None:
    """A process's share of an arm's study, then (if it is the first) that study's finals."""
    tune_arm(task.config, task.arm, task.study_index, owns_study=task.owns_study, progress=progress)
    if task.train_finals:
        train_finals(FinalsTask(task.config, task.arm, tuple(_study_finals(task.config, task.arm, task.study_index))),
                     progress)


# -- orchestration -----------------------------------------------------------------------------------

def check_spaces(config: CompareConfig) -> None:
    """Refuse, before any training, a space that does not fit its arm (see
    :func:`~hessian_lr.arms.check_space`); the optimizers are built on the workload's shapes."""
    with torch.random.fork_rng(devices=[]):
        params = list(initial_model(get_workload(config.workload, config.workload_options), config.seed).parameters())
    for arm in config.optimizers:
        check_space(config.arm(arm), config.arm_spaces[arm], params)


def _stage_one_tasks(config: CompareConfig) -> list[TuneTask]:
    """Spread the workers over the studies. A study with one process owns it: its resume is
    deterministic and it may batch the start-up trials. Interrupted trials are taken over by
    whichever process finds their owner dead (journal storages) or failed by heartbeat and queued
    again (database storages): see :mod:`hessian_lr.tuning.study`."""
    studies = [(arm, index) for arm in config.optimizers for index in range(config.studies)]
    workers = max(config.workers, len(studies))
    shared_rdb = bool(config.storage and "://" in config.storage)
    tasks = []
    for position, (arm, index) in enumerate(studies):
        processes = workers // len(studies) + (position < workers % len(studies))
        owns = processes == 1 and not shared_rdb
        tasks += [TuneTask(config, arm, index, owns, worker == 0) for worker in range(processes)]
    # Longest first: this process takes the first task and has no start-up cost of its own.
    return sorted(tasks, key=lambda task: -config.arm(task.arm).relative_cost)


def prepare_storage(config: CompareConfig) -> None:
    """Make the storage's schema and the run's studies (and, on a database, its finals study)
    once, before processes race for them."""
    for arm in config.optimizers:
        for index in range(config.studies):
            _open(config, arm, index)
    if shares_finals(config):
        _finals_study(config)


def publish_plan(compares: Sequence[CompareConfig]) -> Any:
    """On a database storage, the run's plan for ``hessian-lr worker`` (:mod:`.plan`); returns the
    plan study, or None for a journal file (whose workers join the studies that exist)."""
    first = compares[0]
    if not shares_finals(first):
        return None
    return run_plan.publish_plan(_storage(first), first.study, [c.to_dict() for c in compares])


def run_compare(config: CompareConfig, progress: Progress = no_progress, *, publish: bool = True) -> Results:
    """Tune, train the finals (and ablation) and write every output into ``config.out``.
    ``publish``: publish the run's plan for workers (a suite publishes its own)."""
    from hessian_lr.pipeline.outputs import write_outputs

    store = RunStore(config.out)
    check_spaces(config)
    check_storage(config.storage, config.out)  # before anything is created
    with store.exclusive():
        store.write_config(config.to_dict())
        plan_study = publish_plan([config]) if publish else None  # first: a worker never sees studies without it
        prepare_storage(config)
        with executor(config.workers, config.threads, config.lanes, progress, config.devices) as run_all:
            run_all(tune_and_train_finals, _stage_one_tasks(config))
            trials = {arm: [_trial_records(config, arm, i) for i in range(config.studies)] for arm in config.optimizers}
            best = {arm: [_best(records, arm) for records in trials[arm]] for arm in config.optimizers}
            plan = plan_final_runs(config, {arm: best[arm][0].params for arm in config.optimizers})
            ablation = {arm: [run for source, runs in sources.items() if source != arm for run in runs]
                        for arm, sources in plan.items()}
            run_all(train_finals, [FinalsTask(config, arm, tuple(runs)) for arm, runs in ablation.items() if runs])
        results = assemble_results(config, final_store(config), trials, best, plan)
        write_outputs(results, config.out)
        if plan_study is not None:
            run_plan.mark_done(plan_study)
        events.announce("outputs-written", config.out)
    return results


def assemble_results(config: CompareConfig, store: RunStore | SharedRuns, trials: dict[str, list[list[TrialRecord]]],
                     best: dict[str, list[TrialRecord]], plan: dict[str, dict[str, list[FinalRun]]]) -> Results:
    """Results from the studies' records and the stored final runs (all present by now)."""
    def load(runs: Sequence[FinalRun]) -> list[dict]:
        loaded = [store.load(run) for run in runs]
        missing = [run.key for run, data in zip(runs, loaded) if data is None]
        if missing:
            raise RuntimeError(f"final runs missing from {store.where}: {', '.join(missing)}")
        return loaded  # type: ignore[return-value]

    optimizers, packages = {}, {}
    for arm in config.optimizers:
        arm_object = config.arm(arm)
        seeds = load(plan[arm][arm])
        head = best[arm][0]
        source = provenance(arm_object)
        packages.update({info["distribution"]: info["version"] for info in source["packages"].values()
                         if info["distribution"]})
        studies = []
        if config.studies > 1:
            for index, study_best in enumerate(best[arm]):
                runs = load(_study_finals(config, arm, index))
                studies.append({"study": index, "sampler_seed": config.study_seed(index),
                                "best_value": study_best.value, "best_params": study_best.params,
                                "final": {**runs[0], "seeds": runs}})
        optimizers[arm] = ArmResults(
            best_lr=head.lr, best_value=head.value, trials=[t for records in trials[arm] for t in records],
            final={**seeds[0], "seeds": seeds}, best_params=_hyperparameters(arm_object, head.params),
            space=config.arm_spaces[arm].to_json(), source=source, studies=studies)
    extra: dict[str, Any] = {}
    if config.ablation:
        extra["ablation_runs"] = {arm: {source: load(runs) for source, runs in plan[arm].items() if source != arm}
                                  for arm in config.optimizers}
    workload_source = workload_provenance(config.workload, config.workload_options)
    packages.update({info["distribution"]: info["version"] for info in workload_source["packages"].values()
                     if info["distribution"]})
    extra["workload_source"] = workload_source
    extra["workers"] = who_ran_what(config, [run for sources in plan.values() for runs in sources.values()
                                             for run in runs])
    return Results(config={**config.to_dict(), "arm_spaces": config.resolved_spaces(), **config.device_record()},
                   versions=versions(packages), optimizers=optimizers, extra=extra)


def who_ran_what(config: CompareConfig, final_runs: Sequence[FinalRun]) -> list[dict[str, Any]]:
    """Which process (host, pid; ``run``: the run folder of a compare/suite process, None for a
    ``hessian-lr worker``) trained how many of each arm's counted trials and — on a database
    storage, where any process may train them — of its final runs (``final_runs``; with a journal
    file they are all this run's). Processes in order of their first trial."""
    table: dict[tuple[Any, Any], dict[str, Any]] = {}

    def count(owner: Mapping[str, Any], what: str, arm: str) -> None:
        key = (owner.get("host"), owner.get("pid"))
        entry = table.setdefault(key, {"host": key[0], "pid": key[1], "run": owner.get("run"), "trials": {},
                                       "final_runs": {}})
        entry[what][arm] = entry[what].get(arm, 0) + 1

    for arm in config.optimizers:
        for index in range(config.studies):
            for trial in finished_trials(_open(config, arm, index))[: config.trials]:
                count(trial.user_attrs.get(OWNER_ATTR) or {}, "trials", arm)
    if shares_finals(config):
        wanted = {run.key for run in final_runs}
        for owner, payload in job_owners(_finals_study(config)):
            for run in map(lambda fields: FinalRun(**fields), payload):
                if run.key in wanted:
                    wanted.discard(run.key)  # a run finished twice (a retry of a stale job) counts once
                    count(owner, "final_runs", run.arm)
    return list(table.values())


def run_worker(storage: str, study: str, threads: int = 1, progress: Progress = no_progress,
               overrides: Mapping[str, Any] | None = None) -> list[str]:
    """Work on the run named ``study`` in ``storage`` until it is done; any number of workers on
    any machines may do this at once. Returns the names of the studies worked on.

    On a database storage the run publishes its plan (:mod:`.plan`): the worker does the trials
    and final runs of the comparison the run is doing, follows it to the next one (a suite's
    next workload) and exits once the run has written its outputs. A journal file has no plan:
    the worker joins the studies named ``study.*`` that exist and runs their trials until their
    budgets are met. A worker started on a database before its run waits for the run's plan
    (saying so once). ``overrides``: settings of this worker's own (e.g. its device) that
    replace the run's in every comparison it joins.
    """
    torch.set_num_threads(threads)
    check_storage(storage, Path("."), must_exist=True)
    backend = _database(storage) if is_url(storage) else storage_for(storage, Path("."))
    waiting = False
    while run_plan.read_plan(backend, study) is None and is_url(storage) and not _study_names(backend, study):
        if not waiting:
            log.warning(f"waiting for a run named {study!r} to start on {display_storage(storage)} "
                        "(hessian-lr suite/compare --storage ... --study NAME)")
            events.announce("worker-waiting", study)
            waiting = True
        time.sleep(POLL_S)
    if run_plan.read_plan(backend, study) is not None:
        return _follow_plan(backend, storage, study, progress, dict(overrides or {}))
    return _join_studies(backend, storage, study, progress, dict(overrides or {}))


def _study_names(backend: Any, study: str) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)
            if s.study_name == study or s.study_name.startswith(f"{study}.")]


def _joined_config(name: str, stored: Mapping[str, Any], storage: str, overrides: Mapping[str, Any]) -> CompareConfig:
    try:
        return CompareConfig(**{**stored, "storage": storage, **overrides})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"study {name!r} cannot be joined by this version of hessian-lr: {exc}") from None


def _follow_plan(backend: Any, storage: str, study: str, progress: Progress, overrides: dict[str, Any]) -> list[str]:
    owner = owner_identity(None)
    worked: dict[str, None] = {}
    finished: set[tuple[str, int]] = set()  # tuning studies whose budget is met (it never shrinks)
    while (plan := run_plan.read_plan(backend, study)) is not None:
        if plan.current < len(plan.compares):
            config = _joined_config(study, plan.compares[plan.current], storage, overrides)
            for arm in config.optimizers:
                for index in range(config.studies):
                    name = study_name(config, arm, index)
                    if (name, config.trials) not in finished:
                        tune_arm(config, arm, index, owns_study=False, progress=progress, worker=True)
                        finished.add((name, config.trials))
                        worked[name] = None
            finals = _finals_study(config)
            if work_while_waiting(finals, _final_job_runner(config, progress), owner):
                worked[finals.study_name] = None
        if plan.done:
            break
        time.sleep(POLL_S)  # the run's finals are not queued yet, or it goes on to its next comparison
    return list(worked)


def _join_studies(backend: Any, storage: str, study: str, progress: Progress, overrides: dict[str, Any]) -> list[str]:
    import optuna

    names = _study_names(backend, study)
    if not names:
        raise ValueError(f"no study named {study!r} (or {study}.*) in {display_storage(storage)}; start it with "
                         "hessian-lr compare --storage ... --study NAME")
    for name in sorted(names):
        attrs = optuna.load_study(study_name=name, storage=backend).user_attrs
        if attrs.get("kind") == "finals":
            continue
        if "config" not in attrs or "arm" not in attrs:
            raise ValueError(f"study {name!r} was not made by hessian-lr compare")
        config = _joined_config(name, attrs["config"], storage, overrides)
        tune_arm(config, attrs["arm"], int(attrs.get("study_index", 0)), owns_study=False, progress=progress,
                 worker=True)
    return sorted(names)
