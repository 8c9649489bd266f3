"""Budget curves and the spread of tuned results over repeated studies, on hand-made trial values."""

from __future__ import annotations

import pytest
from report_synthetic import make_results

from hessian_lr.report.budget import (best_so_far, budget_curve, budget_curves, median_and_range,
                                      studies_from_results, tuning_spread)
from hessian_lr.report.plots import budget_curves_png

# three studies of one arm; the first and the third begin with diverged trials
STUDIES = [[None, 1.2, 1.1, 1.3, 1.0],
           [1.5, 1.4, None, 1.05, 1.02],
           [None, None, 1.3, 1.2, 1.2]]


def test_best_so_far_is_undefined_until_the_first_success():
    assert best_so_far([None, None, 1.3, 1.4, 1.2]) == [None, None, 1.3, 1.3, 1.2]
    assert best_so_far([1.0, float("nan"), 0.9]) == [1.0, 1.0, 0.9]  # a non-finite value is a failure
    assert best_so_far([None, None]) == [None, None]
    assert best_so_far([]) == []


def test_median_and_range_count_a_missing_study_as_worst():
    assert median_and_range([1.0, 3.0, 2.0]) == (2.0, 1.0, 3.0)
    assert median_and_range([1.0, 2.0, None]) == (2.0, 1.0, None)  # the top is unbounded
    assert median_and_range([1.0, None, None]) == (None, 1.0, None)
    assert median_and_range([1.0, 2.0]) == (1.5, 1.0, 2.0)
    assert median_and_range([None]) == (None, None, None)
    with pytest.raises(ValueError):
        median_and_range([])


def test_budget_curve_by_hand():
    curve = budget_curve(STUDIES, "adam")
    assert (curve.arm, curve.studies, curve.budgets) == ("adam", 3, (1, 2, 3, 4, 5))
    # best so far per study: [-, 1.2, 1.1, 1.1, 1.0], [1.5, 1.4, 1.4, 1.05, 1.02], [-, -, 1.3, 1.2, 1.2]
    assert curve.defined == (1, 2, 3, 3, 3)
    assert curve.median == (None, 1.4, 1.3, 1.1, 1.02)
    assert curve.low == (1.5, 1.2, 1.1, 1.05, 1.0)
    assert curve.high == (None, None, 1.4, 1.2, 1.2)


def test_budget_curve_stops_at_the_shortest_study_and_checks_input():
    assert budget_curve([[1.0, 0.9, 0.8], [1.1, 1.0]]).budgets == (1, 2)
    for bad in ([], [[1.0], []]):
        with pytest.raises(ValueError):
            budget_curve(bad)
    one = budget_curve([[1.2, None, 1.0]])
    assert one.median == one.low == one.high == (1.2, 1.2, 1.0)


def test_tuning_spread():
    spread = tuning_spread(STUDIES, arm="adam")
    assert spread.best_per_study == (1.0, 1.02, 1.2)
    assert (spread.best_median, spread.best_low, spread.best_high) == (1.02, 1.0, 1.2)
    assert spread.best_range == pytest.approx(0.2) and spread.final_mean_per_study is None
    with_finals = tuning_spread(STUDIES, final_means=[1.01, 1.03, None])
    assert with_finals.final_mean_per_study == (1.01, 1.03, None)
    assert (with_finals.final_median, with_finals.final_low, with_finals.final_high) == (1.03, 1.01, None)
    failed = tuning_spread([[None, None], [1.1]])
    assert failed.best_per_study == (None, 1.1) and failed.best_range is None
    with pytest.raises(ValueError):
        tuning_spread(STUDIES, final_means=[1.0])
    with pytest.raises(ValueError):
        tuning_spread([])


def test_one_study_per_arm_from_a_compare_run():
    results, _ = make_results(ablation=False)
    studies = studies_from_results(results)
    assert list(studies) == ["adam", "hessian-adam"] and len(studies["adam"]) == 1
    assert studies["adam"][0] == [t.value for t in results.optimizers["adam"].trials]
    curve = budget_curves(studies)["adam"]
    assert curve.median[-1] == results.optimizers["adam"].best_value  # the study's best trial


def test_budget_figure_is_deterministic():
    curves = budget_curves({"adam": STUDIES, "sgd": [[1.3, 1.2, 1.1, 1.1, 1.1]]})
    png = budget_curves_png(curves)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == budget_curves_png(budget_curves(
        {"adam": STUDIES, "sgd": [[1.3, 1.2, 1.1, 1.1, 1.1]]}))


def test_median_and_range_cells_read_as_the_reports_print_them():
    from hessian_lr.report.formatting import fmt_median_range

    assert fmt_median_range(1.23456, 1.0, 2.5) == "1.2346 [1.0000, 2.5000]"
    assert fmt_median_range(None, None, None) == "—"  # no study has a successful trial yet
    assert fmt_median_range(0.5, 0.25, 0.75, digits=2) == "0.50 [0.25, 0.75]"
