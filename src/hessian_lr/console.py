"""Terminal output of the CLI: progress bars while running, a summary table at the end."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hessian_lr.pipeline.execution import ProgressEvent
from hessian_lr.config import CompareConfig
from hessian_lr.results import Results

__all__ = ["ProgressDisplay", "SuiteProgressDisplay", "print_summary"]


class ProgressDisplay:
    """One bar per optimizer over its tuning epochs (trials x epochs), one for the final runs."""

    def __init__(self, config: CompareConfig, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
            console=Console(stderr=True), disable=not enabled,
        )
        self.tasks = {
            arm: self.progress.add_task(f"tune {arm}", total=config.studies * config.trials * config.evaluations, status="")
            for arm in config.optimizers
        }
        runs_per_arm = config.seeds * (config.studies + (len(config.optimizers) - 1 if config.ablation else 0))
        self.tasks["final"] = self.progress.add_task(
            "final runs" + (" + ablation" if config.ablation else ""),
            total=len(config.optimizers) * runs_per_arm * config.evaluations, status="")
        self.best: dict[str, float] = {}

    def update(self, event: ProgressEvent) -> None:
        task = self.tasks.get(event.task)
        if task is None:
            return
        if event.kind == "epoch":
            self.progress.advance(task, event.count)
        elif event.kind == "trial":
            if event.value is not None:
                self.best[event.task] = min(self.best.get(event.task, float("inf")), event.value)
            best = self.best.get(event.task)
            self.progress.update(task, status=f"trial {event.trial}" + (f", best {best:.4f}" if best else ""))

    def __enter__(self) -> ProgressDisplay:
        if self.enabled:  # a disabled rich Progress still prints a newline when stopped (rich 13.0)
            self.progress.start()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.enabled:
            self.progress.stop()


def _model_epochs(config: CompareConfig) -> int:
    """Model-epochs (model-evaluation periods under --steps/--eval-every) a comparison trains: every
    trial, final run and ablation run."""
    finals = config.seeds * (config.studies + (len(config.optimizers) - 1 if config.ablation else 0))
    return len(config.optimizers) * (config.studies * config.trials + finals) * config.evaluations


class SuiteProgressDisplay:
    """One display over the whole (workload, arm) matrix: a bar per workload (its trials, finals
    and fidelity study) and one over everything, in model-epochs."""

    def __init__(self, config: "SuiteConfig", enabled: bool = True) -> None:  # noqa: F821 - avoids a cycle
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
            console=Console(stderr=True), disable=not enabled,
        )
        self.totals = {w: _model_epochs(config.compare_config(w)) for w in config.workloads}
        self.fidelity = config.fidelity
        self.overall = self.progress.add_task("suite", total=sum(self.totals.values()), status="")
        self.tasks = {w: self.progress.add_task(f"  {w}", total=total, status="") for w, total in self.totals.items()}

    def update(self, event: ProgressEvent) -> None:
        workload, _, part = event.task.partition("/")
        task = self.tasks.get(workload)
        if task is None:
            return
        if event.kind == "epoch":
            self.progress.advance(task, event.count)
            self.progress.advance(self.overall, event.count)
        elif event.kind == "trial":
            self.progress.update(task, status=f"{part}: trial {event.trial}")
        elif event.kind == "done" and part == "fidelity":
            self.progress.update(task, status="fidelity done")

    def __enter__(self) -> SuiteProgressDisplay:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.enabled:
            self.progress.stop()


def print_summary(results: Results, out: Path) -> None:
    table = Table(title=f"Tuned comparison ({results.config['workload']}, seed {results.config['seed']})")
    seeds = results.config.get("seeds", 1)
    if seeds > 1:
        table.caption = f"val loss, test loss and test acc: means over {seeds} paired seeds, CI = 95% t-interval"
    columns = ["optimizer", "best lr", "tuned obj.", "val loss", *(["95% CI"] if seeds > 1 else []),
               "test loss", "test acc", "train s"]
    for column in columns:
        table.add_column(column, justify="left" if column == "optimizer" else "right", no_wrap=column == "optimizer")
    for arm, r in results.optimizers.items():
        f, s = r.final, r.summary
        if seeds > 1:
            val, test_loss, acc = s.get("val_loss_mean"), s.get("test_loss_mean"), s.get("test_accuracy_mean")
            ci = s.get("val_loss_ci95")
            extra = ["—" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"]
        else:
            val, test_loss, acc, extra = f["val_loss"], f.get("test_loss"), f.get("test_accuracy"), []
        table.add_row(arm, "—" if r.best_lr is None else f"{r.best_lr:.5f}", f"{r.best_value:.4f}", "diverged" if val is None else f"{val:.4f}",
                      *extra, "—" if test_loss is None else f"{test_loss:.4f}",
                      "—" if acc is None else f"{100 * acc:.1f}%", f"{f['wall_s']:.2f}")
    console = Console()
    if not console.is_terminal:  # piped or logged: rich would assume 80 columns and squeeze the table
        console = Console(width=120)
    console.print(table)
    console.print(f"results: {out / 'results.json'}\nreport:  {out / 'report.md'} and {out / 'report.html'}\n"
                  f"plot:    {out / 'comparison.png'}")
