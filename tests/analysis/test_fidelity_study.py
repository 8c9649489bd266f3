"""The fidelity metrics on known inputs, and one short end-to-end fidelity run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy import stats

from hessian_lr.analysis.fidelity import (
    DEFAULT_ESTIMATORS,
    METRICS,
    _ranks,
    default_checkpoints,
    fidelity_metrics,
    format_fidelity_table,
    run_fidelity,
    suite_fidelity,
)


def test_metrics_on_known_answers():
    exact = torch.tensor([0.0, 1e-3, 1e-2, 0.5, 2.0, 0.0], dtype=torch.float64)
    same = fidelity_metrics(exact, exact)
    assert same["spearman"] == pytest.approx(1.0) and same["pearson"] == pytest.approx(1.0)
    assert same["log_pearson"] == pytest.approx(1.0) and same["median_rel_error"] == 0.0
    # A squared estimate with estimate_power=2 is compared after the square root: identical.
    assert fidelity_metrics(exact**2, exact, power=2.0) == pytest.approx(same)
    # A constant multiple: scale-free metrics unchanged, raw relative error = |c - 1|, fitted = 0.
    tripled = fidelity_metrics(3 * exact, exact)
    assert tripled["spearman"] == pytest.approx(1.0) and tripled["median_rel_error"] == pytest.approx(2.0)
    assert tripled["median_rel_error_fitted"] == pytest.approx(0.0, abs=1e-12)
    # Reversed order: Spearman -1. Against scipy on random data with ties.
    assert fidelity_metrics(-exact, exact)["spearman"] == pytest.approx(-1.0)
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (200,), generator=g).double()
    b = a + torch.randn(200, generator=g, dtype=torch.float64)
    ours = fidelity_metrics(b, a)
    assert ours["spearman"] == pytest.approx(stats.spearmanr(b, a).statistic, abs=1e-12)
    assert ours["pearson"] == pytest.approx(stats.pearsonr(b, a).statistic, abs=1e-12)
    assert torch.equal(_ranks(a), torch.from_numpy(stats.rankdata(a.numpy())))
    # Constant estimate: correlations undefined -> None (valid JSON), never NaN.
    flat = fidelity_metrics(torch.ones(6, dtype=torch.float64), exact)
    assert flat["spearman"] is None and flat["pearson"] is None


def test_default_checkpoints_cover_start_middle_end():
    assert default_checkpoints(35, 20) == [35, 175, 350, 700]
    assert default_checkpoints(10, 1) == [10]


@pytest.mark.slow
def test_short_fidelity_run_writes_the_schema(tmp_path):
    messages = []
    result = run_fidelity(tmp_path, epochs=2, checkpoints=[3, 70], reference_probes=3, progress=messages.append)
    on_disk = json.loads((tmp_path / "fidelity.json").read_text())
    assert on_disk["checkpoints"] == result["checkpoints"] == [3, 70]
    assert set(on_disk["estimators"]) == set(DEFAULT_ESTIMATORS)
    for name, series in on_disk["estimators"].items():
        assert set(series) == set(METRICS)
        assert all(len(v) == 2 for v in series.values())
    # After 70 steps the running averages already rank parameters like the exact diagonal.
    for name in ("grad-diff", "squared-grad", "gauss-newton"):
        assert on_disk["estimators"][name]["spearman"][-1] > 0.8, name
    assert on_disk["estimators"]["hutchinson"]["spearman"][-1] < on_disk["estimators"]["gauss-newton"]["spearman"][-1]
    assert (tmp_path / "fidelity.png").stat().st_size > 10_000
    assert "gauss-newton" in (tmp_path / "fidelity.md").read_text()
    assert "| grad-diff |" in format_fidelity_table(on_disk)
    assert any("step 70/70" in m for m in messages)
    assert on_disk["config"]["parameters"] == 15210 and math.isfinite(on_disk["final_val_loss"])
    assert torch.get_num_threads() >= 1


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="exact_on"):
        run_fidelity(tmp_path, exact_on="test")
    with pytest.raises(ValueError, match="checkpoints"):
        run_fidelity(tmp_path, epochs=1, checkpoints=[10_000], plot=False)


def test_regression_workload_skips_gauss_newton_bartlett_with_a_note(tmp_path):
    """teacher-student (MSE): the exact diagonal by the GN identity, GNB skipped, Hutchinson kept."""
    result = run_fidelity(tmp_path, workload="teacher-student", epochs=1, checkpoints=[40],
                          reference_probes=2, plot=False)
    assert "gauss-newton" in result["skipped"] and "softmax" in result["skipped"]["gauss-newton"]
    assert set(result["estimators"]) == set(DEFAULT_ESTIMATORS) - {"gauss-newton"}
    assert set(result["references"]) == {"hutchinson-x2"}
    assert result["config"]["task"] == "regression" and result["config"]["exact_route"] == "gauss-newton"
    assert result["estimators"]["grad-diff"]["spearman"][-1] > 0.8
    assert "gauss-newton: skipped" in (tmp_path / "fidelity.md").read_text()


def test_suite_fidelity_on_the_quadratics_sees_the_rotation(tmp_path):
    """Closed-form route; Hutchinson's diagonal sample is exact on a diagonal H (Spearman 1) and only
    noisy once H is rotated."""
    diag = suite_fidelity(tmp_path / "d", "noisy-quadratic")
    rotated = suite_fidelity(tmp_path / "r", "rotated-quadratic")
    assert diag["checkpoints"] == rotated["checkpoints"] == [100, 500]
    assert diag["config"]["exact_route"] == "closed-form" and diag["exact_wall_s"] < 1
    assert diag["estimators"]["hutchinson"]["spearman"][-1] == pytest.approx(1.0)
    assert rotated["estimators"]["hutchinson"]["spearman"][-1] < 0.99
    assert not (tmp_path / "d" / "fidelity.png").exists() and (tmp_path / "d" / "fidelity.json").exists()


def test_exact_rows_limits_the_exact_diagonal(tmp_path):
    result = run_fidelity(tmp_path, workload="digits-softmax", epochs=1, checkpoints=[19], exact_rows=50,
                          reference_probes=0, plot=False)
    assert result["config"]["exact_rows"] == 50 and result["config"]["l2"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="exact_rows"):
        run_fidelity(tmp_path, workload="digits-softmax", exact_rows=0, plot=False)
