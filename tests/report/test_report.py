"""report.md / report.html: generated from results.json alone, byte-identical on rebuild."""

from __future__ import annotations

import json
import re

from report_synthetic import make_results

from hessian_lr.report import REPORT_FILES, render_markdown, summarize, write_report
from hessian_lr.results import Results, write_json

SECTIONS = ("## Hypothesis", "## Method", "### Search spaces", "### Arms", "## Tuned learning rates and hyperparameters",
            "## Reproduction of the original write-up", "## Results", "## Paired differences against adam",
            "## Time to target", "## Equal-lr ablation", "## Hyperparameter sensitivity", "## The write-up's questions",
            "## Conclusion")


def _save(tmp_path, results: Results):
    write_json(tmp_path / "results.json", results.to_dict())
    return Results.from_dict(json.loads((tmp_path / "results.json").read_text()))


def test_report_is_rebuilt_byte_identically_from_results_json(tmp_path, synthetic):
    results, runs = synthetic
    summarize(results, runs)
    first, second = tmp_path / "first", tmp_path / "second"
    written = write_report(results, first)
    assert sorted(written) == sorted(set(REPORT_FILES) - {"budget.png"})  # one tuning study: no budget curves
    write_report(_save(second, results), second)  # what `hessian-lr report DIR` does
    for name in written:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_markdown_has_every_section_and_the_computed_verdicts(tmp_path, synthetic):
    results, runs = synthetic
    summarize(results, runs)
    write_report(results, tmp_path)
    md = (tmp_path / "report.md").read_text()
    positions = [md.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert "0.00524" in md and "0.00271" in md and f"{results.optimizers['adam'].best_lr:.5f}" in md
    # the synthetic data: faster early and adam lower at the end, both well outside the noise
    assert md.count("**supported**") == 2
    assert "**hessian-adam beats adam in early (epoch 2) validation loss**" in md
    assert "**hessian-adam is worse at both lrs**" in md and "**hessian-adam is better at both lrs**" in md
    assert "| hessian-adam | 0 / 8 | — | — | never" in md  # never reaching the target is reported
    mean, (lo, hi) = (results.optimizers["adam"].summary[k] for k in ("val_loss_mean", "val_loss_ci95"))
    assert f"{mean:.4f} [{lo:.4f}, {hi:.4f}]" in md
    for figure in ("curves.png", "sensitivity.png", "ablation.png"):
        assert f"]({figure})" in md and (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained(tmp_path, synthetic):
    results, runs = synthetic
    summarize(results, runs)
    write_report(results, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 3
    assert not re.search(r"(src|href)=\"(http|//|[a-z_]+\.png)", page)
    assert "<h2>Conclusion</h2>" in page and "<strong>supported</strong>" in page and "<table>" in page


def test_single_seed_report_says_there_are_no_intervals(tmp_path):
    results, _ = make_results(k=1, ablation=False)
    summarize(results)
    write_report(results, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "**Single seed: no confidence intervals.**" in md
    assert "no statistical claim" in md and "single seed: no test" in md
    assert "## Equal-lr ablation\n\nNot run" in md and not (tmp_path / "ablation.png").exists()
    assert "95% CI [" not in md
    assert "0 / 8" not in md and "matches in sign (single seed: not a statistical claim)" in md


def test_render_markdown_keeps_the_old_single_figure_call(synthetic):
    results, _ = synthetic
    md = render_markdown(results, plot_name="comparison.png")  # summarizes on its own when needed
    assert "](comparison.png)" in md and "## Conclusion" in md and "pairwise" in results.extra


def test_fidelity_section_appears_when_present(tmp_path, synthetic):
    results, runs = synthetic
    summarize(results, runs)
    results.extra["fidelity"] = {"description": "Estimated vs exact Hessian diagonal.",
                                 "rows": [{"estimator": "grad-diff", "spearman": 0.41, "cosine": 0.2}]}
    write_report(results, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Estimator fidelity" in md and "| grad-diff | 0.4100 | 0.2000 |" in md


def test_fidelity_study_result_is_rendered_by_metric(tmp_path, synthetic):
    from hessian_lr.report import attach_fidelity

    results, runs = synthetic
    summarize(results, runs)
    assert not attach_fidelity(results, tmp_path)
    study = {"checkpoints": [0, 35], "config": {"workload": "mnist1d-mlp", "parameters": 15210, "lr": 0.003},
             "estimators": {"grad-diff": {"spearman": [0.1, 0.25], "log_pearson": [0.2, None],
                                          "median_rel_error": [0.5, 0.45]}},
             "references": {"hutchinson-x100": {"spearman": [0.9, 0.95]}}}
    (tmp_path / "fidelity.json").write_text(json.dumps(study))
    assert attach_fidelity(results, tmp_path)
    write_report(results, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| grad-diff | 0.100 | 0.250 |" in md and "| grad-diff | 0.200 | — |" in md
    assert "| hutchinson-x100 (reference) | 0.900 | 0.950 |" in md and "15210 parameters" in md


def test_compare_style_ablation_runs_are_moved_into_the_ablation_section(synthetic):
    results, runs = synthetic
    results.extra["ablation_runs"] = runs  # how compare.run_compare hands them over
    summarize(results)
    assert "ablation_runs" not in results.extra and results.extra["ablation"]["runs"] is runs
    assert len(results.extra["ablation"]["equal_lr"]) == 4  # 2 pairs x (early, final)


def test_a_claim_that_fails_holm_is_not_listed_as_supported(tmp_path):
    results, _ = make_results(arms=("adam", "hessian-adam", "sgd"), ablation=False)
    summarize(results)
    row = next(r for r in results.extra["pairwise"]["comparisons"]
               if r["arm"] == "hessian-adam" and r["metric"] == "val_loss" and r["epoch"] == 10)
    row["p_holm"] = 0.2  # pretend the correction over arms removed it (its CI still excludes 0)
    md = render_markdown(results, plot_name=None)  # renders the summary as given (write_report recomputes it)
    supported = next(line for line in md.splitlines() if line.startswith("Statistically supported"))
    assert "hessian-adam is worse than adam in final (epoch 10) validation loss" not in supported
    assert "not after Holm's correction over the 2 arms (p=0.2000)" in md
    assert "hessian-adam worse by CI, not after Holm" in md
