"""The comparison pipeline: tune each arm's lr on its own Optuna study, train the best settings
with paired seeds (and, for the ablation, at the other arms' lrs), write ``results.json``,
``trials.csv``, ``comparison.png`` and the report.

Data flows one way: workload -> training -> tuning -> results.json -> report. Every stage keeps
its finished work on disk (the study storage; one JSON file per final run under ``runs/``), so
running the same command again after an interruption redoes nothing that finished.
"""

from __future__ import annotations

import csv
import fcntl
import io
import multiprocessing as mp
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hessian_lr.arms import get_arm
from hessian_lr.config import CompareConfig
from hessian_lr.results import ArmResults, Results, TrialRecord, atomic_write_text, read_json, versions, write_json
from hessian_lr.training import RunResult, train_run
from hessian_lr.tuning import finished_trials, open_study, run_study, storage_for
from hessian_lr.tuning.study import LR_PARAM, requeue_running
from hessian_lr.workloads import get_workload

__all__ = ["run_compare", "write_outputs", "ProgressEvent", "RunSpec", "plan_final_runs", "tune_arm", "study_name", "run_worker"]


@dataclass(frozen=True)
class ProgressEvent:
    """What a worker reports: ``kind`` is ``"epoch"`` (``count`` models trained one epoch) or
    ``"trial"`` (one trial finished)."""

    task: str
    kind: str
    trial: int | None = None
    value: float | None = None
    count: int = 1


Progress = Callable[[ProgressEvent], None]


def _no_progress(event: ProgressEvent) -> None:
    pass


# -- training many runs: batched where the arm allows it, else one after another ---------------------

def train_runs(config: CompareConfig, arm_name: str, runs: Sequence[tuple[float, int]], *, evaluate_test: bool,
               progress: Progress, task: str, batch: int | None = None) -> list[RunResult]:
    """Train ``(lr, seed)`` runs of one arm: in batches of ``batch`` (default
    ``config.batch_trials``) models with torch.func when that is above 1 and the arm supports it,
    else sequentially."""
    workload = get_workload(config.workload)
    batch = batch or config.batch_trials
    if batch > 1:
        from hessian_lr.training.batched import can_batch, train_batch

        if can_batch(arm_name, workload):
            results: list[RunResult] = []
            for start in range(0, len(runs), batch):
                chunk = list(runs[start : start + batch])
                results += train_batch(workload, arm_name, chunk, epochs=config.epochs, evaluate_test=evaluate_test,
                                       on_epoch=lambda epoch, n=len(chunk): progress(ProgressEvent(task, "epoch", count=n)))
            return results
    arm = get_arm(arm_name)
    return [train_run(workload, arm, lr, epochs=config.epochs, seed=seed, evaluate_test=evaluate_test,
                      on_epoch=lambda epoch, loss: progress(ProgressEvent(task, "epoch")))
            for lr, seed in runs]


# -- work that runs in worker processes (module-level, so it pickles) ------------------------------

_worker_progress: Progress = _no_progress


def _init_worker(queue: Any, threads: int) -> None:
    global _worker_progress
    torch.set_num_threads(threads)
    _worker_progress = queue.put


def study_name(config: CompareConfig, arm: str) -> str:
    return f"{config.study}.{config.workload}.{arm}.{config.study_fingerprint()}"


def _open_arm_study(config: CompareConfig, arm: str):
    return open_study(storage_for(config.storage, config.out), study_name(config, arm), config.study_fingerprint(),
                      attrs={"config": config.to_dict(), "arm": arm})


def tune_arm(config: CompareConfig, arm_name: str, resume_running: bool = True,
             progress: Progress | None = None) -> None:
    """Run ``arm_name``'s study until ``config.trials`` trials have finished."""
    progress = progress or _worker_progress
    study = _open_arm_study(config, arm_name)

    def objective(lrs: Sequence[float]) -> list[tuple[float | None, dict]]:
        # The study hands over the trials that may train together (a batch, or TPE's start-up).
        runs = train_runs(config, arm_name, [(lr, config.seed) for lr in lrs], evaluate_test=False,
                          progress=progress, task=arm_name, batch=len(lrs))
        return [(run.val_loss, {"val_loss_curve": run.val_loss_curve, "wall_s": run.wall_s}) for run in runs]

    run_study(study, objective, n_trials=config.trials, lr_range=(config.lr_low, config.lr_high), seed=config.seed,
              batch_size=config.batch_trials, batch_startup=config.batch_startup, resume_running=resume_running,
              on_trial=lambda number, lr, value: progress(ProgressEvent(arm_name, "trial", number, value)))


@dataclass(frozen=True)
class RunSpec:
    """One final training run; its result is kept in ``out/runs/<key>.json``."""

    arm: str
    lr: float
    seed: int
    epochs: int
    workload: str

    @property
    def key(self) -> str:
        return f"{self.workload}.{self.arm}.lr{self.lr!r}.seed{self.seed}.e{self.epochs}"


def _run_path(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / f"{spec.key}.json"


def final_runs(config: CompareConfig, arm: str, specs: list[RunSpec], progress: Progress | None = None) -> None:
    """Train the specs of one arm whose result files are missing; write each atomically."""
    progress = progress or _worker_progress
    todo = [spec for spec in specs if not _run_path(config.out, spec).exists()]
    for start in range(0, len(todo), config.batch_trials):  # written as they finish: a kill loses one batch
        chunk = todo[start : start + config.batch_trials]
        runs = train_runs(config, arm, [(spec.lr, spec.seed) for spec in chunk], evaluate_test=True,
                          progress=progress, task="final")
        for spec, run in zip(chunk, runs):
            write_json(_run_path(config.out, spec), run.to_dict())


# -- orchestration -----------------------------------------------------------------------------------

@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` so two compare commands never share a run folder by accident."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another hessian-lr process is using {out}") from None
        yield


Runner = Callable[[Callable[..., Any], list[tuple]], list[Any]]


class _LanesStopped(Exception):
    """Raised in a lane at its next progress report once another lane failed or was interrupted."""


def _in_lanes(lanes: int, fn: Callable[..., Any], items: list[tuple], progress: Progress) -> list[Any]:
    """``[fn(*item, progress=progress) for item in items]``, up to ``lanes`` at once: this thread
    and ``lanes - 1`` more take the items in order. Batched training spends its time in torch ops
    that release the GIL, so the lanes use the cores in parallel.

    When an item fails, or this thread is interrupted (Ctrl-C), the other lanes stop at their
    next progress report (every epoch) and are joined before the error is raised: no thread is
    left inside torch while the interpreter exits, and everything finished is in the study."""
    if lanes <= 1 or len(items) <= 1:
        return [fn(*item, progress=progress) for item in items]
    results: list[Any] = [None] * len(items)
    errors: dict[int, BaseException] = {}
    next_index = iter(range(len(items)))
    take = threading.Lock()
    stop = threading.Event()

    def checked(event: ProgressEvent) -> None:
        if stop.is_set():
            raise _LanesStopped
        progress(event)

    def lane() -> None:
        while not stop.is_set():
            with take:
                index = next(next_index, None)
            if index is None:
                return
            try:
                results[index] = fn(*items[index], progress=checked)
            except _LanesStopped:
                return
            except BaseException as exc:  # noqa: BLE001 - raised by the calling thread below
                errors[index] = exc
                stop.set()
                return

    others = [threading.Thread(target=lane, daemon=True, name=f"hessian-lr-lane-{i + 1}")
              for i in range(min(lanes, len(items)) - 1)]
    for thread in others:
        thread.start()
    try:
        lane()
        for thread in others:
            thread.join()
    except BaseException:
        stop.set()
        for thread in others:
            thread.join()
        raise
    if errors:
        raise errors[min(errors)]
    return results


@contextmanager
def _executor(config: CompareConfig, progress: Progress) -> Iterator[Runner]:
    """``run(fn, [args, ...])`` on ``config.workers`` processes, each with
    ``config.threads`` intra-op threads. This process is one of them: it runs the first item
    itself while the others go to a spawn pool (no start-up cost for one worker, and none at
    all with one worker). Workers' progress events come back through a queue. A single process
    runs ``config.lanes`` items at once in threads (batched training, see :func:`_in_lanes`)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    helpers = config.workers - 1
    if helpers < 1:
        try:
            yield lambda fn, items: _in_lanes(config.lanes, fn, items, progress)
        finally:
            torch.set_num_threads(previous_threads)
        return
    ctx = mp.get_context("spawn")  # fork is unsafe once torch's thread pools exist
    queue = ctx.Queue()

    def relay() -> None:
        while (event := queue.get()) is not None:
            progress(event)

    listener = threading.Thread(target=relay, daemon=True)
    listener.start()
    pool = ProcessPoolExecutor(helpers, mp_context=ctx, initializer=_init_worker, initargs=(queue, config.threads))

    def run(fn: Callable[..., Any], items: list[tuple]) -> list[Any]:
        if not items:
            return []
        futures = [pool.submit(fn, *item) for item in items[1:]]
        first = fn(*items[0], progress=progress)
        return [first, *(future.result() for future in futures)]

    try:
        yield run
    finally:
        # Don't wait for the workers to exit (torch's teardown takes ~1 s): outputs come first.
        pool.shutdown(wait=False, cancel_futures=True)
        queue.put(None)
        listener.join(timeout=5)
        torch.set_num_threads(previous_threads)


def tune_and_train_finals(config: CompareConfig, arm: str, resume_running: bool, train_finals: bool,
                          progress: Progress | None = None) -> None:
    """One worker's share of an arm: its trials, then (for one worker per arm) the arm's own
    final runs, which need nothing from the other arms — so a fast arm never waits for a slow one."""
    tune_arm(config, arm, resume_running, progress=progress)
    if train_finals:
        best = _best(_trial_records(config, arm))
        final_runs(config, arm, plan_final_runs(config, {arm: best.lr}, arms=(arm,))[arm][arm], progress=progress)


def _stage_one_tasks(config: CompareConfig) -> list[tuple]:
    """Spread the workers over the arms' studies. A study with one process re-evaluates its own
    interrupted trials (deterministic resume); shared journal studies get them re-queued first;
    RDB studies recover them through heartbeats."""
    arms = config.optimizers
    workers = max(config.workers, len(arms))
    shared_rdb = bool(config.storage and "://" in config.storage)
    tasks = []
    for index, arm in enumerate(arms):
        processes = workers // len(arms) + (index < workers % len(arms))
        if processes > 1 and not shared_rdb:
            requeue_running(_open_arm_study(config, arm))
        resume = processes == 1 and not shared_rdb
        tasks += [(config, arm, resume, worker == 0) for worker in range(processes)]
    # Longest first: this process takes the first task and has no start-up cost of its own.
    return sorted(tasks, key=lambda task: -get_arm(task[1]).relative_cost)


def _trial_records(config: CompareConfig, arm: str) -> list[TrialRecord]:
    study = _open_arm_study(config, arm)
    return [TrialRecord(number=t.number, lr=t.params[LR_PARAM], value=t.value, state=t.state.name)
            for t in finished_trials(study)[: config.trials]]


def _best(trials: list[TrialRecord]) -> TrialRecord:
    completed = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    if not completed:
        raise RuntimeError("every trial diverged; narrow the lr range")
    return min(completed, key=lambda t: (t.value, t.number))


def plan_final_runs(config: CompareConfig, best_lr: dict[str, float],
                    arms: Sequence[str] | None = None) -> dict[str, dict[str, list[RunSpec]]]:
    """``plan[arm][lr_source]``: the runs of ``arm`` at ``lr_source``'s tuned lr, one per seed.
    ``lr_source == arm`` are the finals; the others (when ``config.ablation``) the equal-lr ablation.
    ``arms`` limits the plan to those arms' own finals (the lrs of the others may not be known yet)."""
    plan: dict[str, dict[str, list[RunSpec]]] = {}
    for arm in arms or config.optimizers:
        sources = config.optimizers if config.ablation and arms is None else (arm,)
        plan[arm] = {source: [RunSpec(arm, best_lr[source], seed, config.epochs, config.workload)
                              for seed in config.final_seeds] for source in sources}
    return plan


def run_compare(config: CompareConfig, progress: Progress = _no_progress) -> Results:
    """Tune, train the finals (and ablation) and write every output into ``config.out``."""
    with _exclusive(config.out):
        write_json(config.out / "config.json", config.to_dict())
        for arm in config.optimizers:  # storage schema and studies made once, before workers race for them
            _open_arm_study(config, arm)
        with _executor(config, progress) as run_all:
            run_all(tune_and_train_finals, _stage_one_tasks(config))
            trials = {arm: _trial_records(config, arm) for arm in config.optimizers}
            best = {arm: _best(trials[arm]) for arm in config.optimizers}
            plan = plan_final_runs(config, {arm: best[arm].lr for arm in config.optimizers})
            if config.ablation:  # each arm at the others' lrs: needs every arm's tuned lr first
                ablation = {arm: [spec for source, specs in sources.items() if source != arm for spec in specs]
                            for arm, sources in plan.items()}
                run_all(final_runs, [(config, arm, specs) for arm, specs in ablation.items() if specs])

        def load(specs: list[RunSpec]) -> list[dict]:
            return [read_json(_run_path(config.out, spec)) for spec in specs]

        optimizers = {}
        for arm in config.optimizers:
            seeds = load(plan[arm][arm])
            optimizers[arm] = ArmResults(best_lr=best[arm].lr, best_value=best[arm].value, trials=trials[arm],
                                         final={**seeds[0], "seeds": seeds})
        extra = {}
        if config.ablation:
            extra["ablation_runs"] = {arm: {source: load(specs) for source, specs in plan[arm].items() if source != arm}
                                      for arm in config.optimizers}
        results = Results(config=config.to_dict(), versions=versions(), optimizers=optimizers, extra=extra)
        write_outputs(results, config.out)
    return results


def run_worker(storage: str, study: str, threads: int = 1, progress: Progress = _no_progress) -> list[str]:
    """Join every unfinished study named ``study`` (or ``study.*``) in ``storage`` and run its
    trials until its budget is met; several workers on several machines may do this at once.
    Returns the names of the studies worked on."""
    import optuna

    torch.set_num_threads(threads)
    backend = storage_for(storage, Path("."))
    names = [s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)
             if s.study_name == study or s.study_name.startswith(f"{study}.")]
    if not names:
        raise ValueError(f"no study named {study!r} (or {study}.*) in the storage; start it with hessian-lr compare")
    for name in sorted(names):
        attrs = optuna.load_study(study_name=name, storage=backend).user_attrs
        if "config" not in attrs or "arm" not in attrs:
            raise ValueError(f"study {name!r} was not made by hessian-lr compare")
        config = CompareConfig(**{**attrs["config"], "storage": storage})
        tune_arm(config, attrs["arm"], resume_running=False, progress=progress)
    return sorted(names)


def trials_csv(results: Results) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["optimizer", "number", "lr", "value", "state"])
    for arm, arm_results in results.optimizers.items():
        for t in arm_results.trials:
            writer.writerow([arm, t.number, repr(t.lr), "" if t.value is None else repr(t.value), t.state])
    return buffer.getvalue()


def write_outputs(results: Results, out: Path) -> None:
    """results.json (with the seed statistics, pairwise tests and ablation summary), trials.csv,
    comparison.png, report.md and report.html (with its figures), each written atomically.
    ``hessian-lr report`` calls this on a loaded results.json: the rebuild is byte-identical."""
    from hessian_lr.report import attach_fidelity, save_comparison_plot, summarize, write_report

    attach_fidelity(results, out)
    summarize(results)
    write_json(out / "results.json", results.to_dict())
    atomic_write_text(out / "trials.csv", trials_csv(results))
    save_comparison_plot(results, out / "comparison.png")
    write_report(results, out)
