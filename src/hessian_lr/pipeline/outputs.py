"""The run folder's outputs, written from ``Results`` alone: results.json, trials.csv, the figures
and the report. ``hessian-lr report DIR`` calls :func:`write_outputs` on a loaded results.json:
the rebuild is byte-identical."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from hessian_lr.results import Results, atomic_write_text, write_json

__all__ = ["write_outputs", "trials_csv"]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def trials_csv(results: Results) -> str:
    """One row per trial of every arm; one column per hyperparameter of any arm's space (empty
    where an arm's space lacks it)."""
    names: list[str] = []
    for arm_results in results.optimizers.values():
        for trial in arm_results.trials:
            names += [n for n in trial.params if n not in names]
    if "lr" in names:
        names.remove("lr")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["optimizer", "study", "number", "lr", *names, "value", "state"])
    for arm, arm_results in results.optimizers.items():
        for t in arm_results.trials:
            writer.writerow([arm, t.study, t.number, _cell(t.lr), *(_cell(t.params.get(n)) for n in names),
                             _cell(t.value), t.state])
    return buffer.getvalue()


def write_outputs(results: Results, out: Path) -> None:
    """results.json (with the seed statistics, pairwise tests and ablation summary), trials.csv,
    comparison.png, report.md and report.html (with its figures), each written atomically."""
    from hessian_lr.report import attach_fidelity, save_comparison_plot, summarize, write_report

    attach_fidelity(results, out)
    summarize(results)
    write_json(out / "results.json", results.to_dict())
    atomic_write_text(out / "trials.csv", trials_csv(results))
    save_comparison_plot(results, out / "comparison.png")
    write_report(results, out)
