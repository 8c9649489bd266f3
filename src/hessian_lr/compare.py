"""The comparison pipeline: tune each arm's lr on its own Optuna study, train the best settings,
write ``results.json``, ``trials.csv``, ``comparison.png`` and ``report.md``.

Data flows one way: workload -> training -> tuning -> results.json -> report. Every stage
keeps its finished work on disk (the study storage, one JSON file per final run), so running the
same command again after an interruption redoes nothing that finished.
"""

from __future__ import annotations

import csv
import fcntl
import io
import multiprocessing as mp
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hessian_lr.arms import get_arm
from hessian_lr.config import CompareConfig
from hessian_lr.results import ArmResults, Results, TrialRecord, atomic_write_text, read_json, versions, write_json
from hessian_lr.training import train_run
from hessian_lr.tuning import finished_trials, open_study, run_study, storage_for
from hessian_lr.tuning.study import LR_PARAM
from hessian_lr.workloads import get_workload

__all__ = ["run_compare", "write_outputs", "ProgressEvent"]


@dataclass(frozen=True)
class ProgressEvent:
    """What a worker reports: ``kind`` is ``"epoch"`` (one epoch trained) or ``"trial"``."""

    task: str
    kind: str
    trial: int | None = None
    value: float | None = None


Progress = Callable[[ProgressEvent], None]


def _no_progress(event: ProgressEvent) -> None:
    pass


# -- work that runs in worker processes (module-level, so it pickles) ----------------------------

_worker_progress: Progress = _no_progress


def _init_worker(queue: Any, threads: int) -> None:
    global _worker_progress
    torch.set_num_threads(threads)
    _worker_progress = queue.put


def study_name(config: CompareConfig, arm: str) -> str:
    return f"{config.workload}.{arm}.{config.study_fingerprint()}"


def tune_arm(config: CompareConfig, arm_name: str, progress: Progress | None = None) -> None:
    """Run ``arm_name``'s study until ``config.trials`` trials have finished."""
    progress = progress or _worker_progress
    workload, arm = get_workload(config.workload), get_arm(arm_name)
    study = open_study(storage_for(config.storage, config.out), study_name(config, arm_name),
                       config.study_fingerprint())

    def objective(lr: float) -> tuple[float | None, dict]:
        run = train_run(workload, arm, lr, epochs=config.epochs, seed=config.seed, evaluate_test=False,
                        on_epoch=lambda epoch, loss: progress(ProgressEvent(arm_name, "epoch")))
        return run.val_loss, {"val_loss_curve": run.val_loss_curve, "wall_s": run.wall_s}

    run_study(study, objective, n_trials=config.trials, lr_range=(config.lr_low, config.lr_high),
              seed=config.seed,
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


def final_run(spec: RunSpec, out: Path, progress: Progress | None = None) -> dict:
    """Train ``spec`` unless its result file exists; return the result as a dict."""
    progress = progress or _worker_progress
    path = out / "runs" / f"{spec.key}.json"
    if path.exists():
        return read_json(path)
    run = train_run(get_workload(spec.workload), get_arm(spec.arm), spec.lr, epochs=spec.epochs, seed=spec.seed,
                    on_epoch=lambda epoch, loss: progress(ProgressEvent(f"final {spec.arm}", "epoch")))
    write_json(path, run.to_dict())
    return read_json(path)  # the JSON form, so fresh and reused runs are identical


# -- orchestration --------------------------------------------------------------------------------

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


@contextmanager
def _executor(config: CompareConfig, progress: Progress) -> Iterator[Callable[..., list]]:
    """``map(fn, args_list)``: in this process (1 worker) or in a spawn pool with one intra-op
    thread each; workers' progress events come back through a queue."""
    workers = config.effective_workers
    if workers <= 1:
        torch.set_num_threads(config.threads)
        yield lambda fn, items: [fn(*item, progress=progress) for item in items]
        return
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()

    def relay() -> None:
        while (event := queue.get()) is not None:
            progress(event)

    listener = threading.Thread(target=relay, daemon=True)
    listener.start()
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(queue, config.threads)) as pool:
            yield lambda fn, items: [f.result() for f in [pool.submit(fn, *item) for item in items]]
    finally:
        queue.put(None)
        listener.join(timeout=5)


def _trial_records(config: CompareConfig, arm: str) -> list[TrialRecord]:
    study = open_study(storage_for(config.storage, config.out), study_name(config, arm), config.study_fingerprint())
    return [TrialRecord(number=t.number, lr=t.params[LR_PARAM], value=t.value, state=t.state.name)
            for t in finished_trials(study)[: config.trials]]


def _best(trials: list[TrialRecord]) -> TrialRecord:
    completed = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    if not completed:
        raise RuntimeError("every trial diverged; narrow the lr range")
    return min(completed, key=lambda t: (t.value, t.number))


def run_compare(config: CompareConfig, progress: Progress = _no_progress) -> Results:
    """Tune, train the finals and write every output into ``config.out``."""
    with _exclusive(config.out):
        write_json(config.out / "config.json", config.to_dict())
        with _executor(config, progress) as run_all:
            run_all(tune_arm, [(config, arm) for arm in config.optimizers])
            trials = {arm: _trial_records(config, arm) for arm in config.optimizers}
            specs = [RunSpec(arm, _best(trials[arm]).lr, config.seed, config.epochs, config.workload)
                     for arm in config.optimizers]
            finals = run_all(final_run, [(spec, config.out) for spec in specs])
        results = Results(
            config=config.to_dict(),
            versions=versions(),
            optimizers={
                arm: ArmResults(best_lr=_best(trials[arm]).lr, best_value=_best(trials[arm]).value,
                                trials=trials[arm], final=final)
                for arm, final in zip(config.optimizers, finals)
            },
        )
        write_outputs(results, config.out)
    return results


def trials_csv(results: Results) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["optimizer", "number", "lr", "value", "state"])
    for arm, arm_results in results.optimizers.items():
        for t in arm_results.trials:
            writer.writerow([arm, t.number, repr(t.lr), "" if t.value is None else repr(t.value), t.state])
    return buffer.getvalue()


def write_outputs(results: Results, out: Path) -> None:
    """results.json, trials.csv, comparison.png and report.md, each written atomically."""
    from hessian_lr.report import render_markdown, save_comparison_plot

    write_json(out / "results.json", results.to_dict())
    atomic_write_text(out / "trials.csv", trials_csv(results))
    save_comparison_plot(results, out / "comparison.png")
    atomic_write_text(out / "report.md", render_markdown(results, plot_name="comparison.png"))
