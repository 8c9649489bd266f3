"""Reports: read results, never train. Every number and comparative sentence is computed.

``summarize(results, ablation_runs)`` adds the seed statistics to ``results``;
``write_report(results, out)`` writes report.md, report.html and the figures from them.
For ``hessian-lr suite``: ``summarize_suite(suite)`` adds the computed summary to a suite.json dict
and ``write_suite_report(suite, out)`` writes suite.md, suite.html and profiles.png.

Modules: ``summary`` (seed statistics), ``verdicts`` (every verdict and comparative sentence, per
workload and across workloads), ``document`` (the report's blocks), ``suite`` (the suite report),
``markdown`` / ``html`` (renderers), ``plots`` (figures), ``profiles`` (AlgoPerf performance
profiles and scores), ``budget`` (budget curves and tuning spread over repeated studies),
``spaces`` (search spaces, tuned settings and sources as results.json records them),
``formatting`` (numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

from hessian_lr.report.document import build_document
from hessian_lr.report.markdown import render_markdown, to_markdown
from hessian_lr.report.budget import budget_curves, studies_from_results
from hessian_lr.report.plots import ablation_png, budget_curves_png, curves_png, save_comparison_plot, sensitivity_png
from hessian_lr.report.suite import SUITE_FILES, summarize_suite, write_suite_report
from hessian_lr.report.summary import summarize
from hessian_lr.results import Results, _json_safe, atomic_write_bytes, atomic_write_text

__all__ = ["render_markdown", "save_comparison_plot", "summarize", "write_report", "attach_fidelity", "REPORT_FILES",
           "summarize_suite", "write_suite_report", "SUITE_FILES"]

FIGURES = {"curves": "curves.png", "sensitivity": "sensitivity.png", "ablation": "ablation.png", "budget": "budget.png"}
OPTIONAL_FIGURES = ("ablation", "budget")  # drawn only when the run has an ablation / repeated studies
REPORT_FILES = ("report.md", "report.html", *FIGURES.values())  # every file the report may write


def attach_fidelity(results: Results, run_dir: Path) -> bool:
    """Copy ``run_dir/fidelity.json`` (analysis.fidelity's output) into ``results.extra["fidelity"]``,
    so results.json carries it and the report shows it; False when there is none."""
    path = Path(run_dir) / "fidelity.json"
    if not path.exists():
        return False
    results.extra["fidelity"] = json.loads(path.read_text(encoding="utf-8"))
    return True


def write_report(results: Results, out: Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` (self-contained) and the figures into ``out``.

    The report is drawn from the JSON form of ``results`` (exactly what results.json holds), and the
    statistics are recomputed from it, so a rebuild from results.json is byte-identical. Returns the
    paths written by name."""
    data = json.loads(json.dumps(_json_safe(results.to_dict()), allow_nan=False))
    results = summarize(Results.from_dict(data))
    images = {"curves": curves_png(results), "sensitivity": sensitivity_png(results)}
    ablation = ablation_png(results)
    if ablation is not None:
        images["ablation"] = ablation
    studies = studies_from_results(results)
    if any(len(arm_studies) > 1 for arm_studies in studies.values()):
        images["budget"] = budget_curves_png(budget_curves(studies))
    figures = {key: FIGURES[key] for key in images}
    blocks = build_document(results, figures)
    written = {}
    for key, png in images.items():
        written[FIGURES[key]] = out / FIGURES[key]
        atomic_write_bytes(out / FIGURES[key], png)
    for key in OPTIONAL_FIGURES:
        if key not in images:
            (out / FIGURES[key]).unlink(missing_ok=True)  # a stale figure from an earlier run would mislead
    from hessian_lr.report.html import to_html

    title = f"hessian-lr: {results.config.get('workload')} ({', '.join(results.optimizers)})"
    atomic_write_text(out / "report.md", to_markdown(blocks, figures))
    atomic_write_text(out / "report.html", to_html(blocks, images, title))
    written["report.md"], written["report.html"] = out / "report.md", out / "report.html"
    return written
