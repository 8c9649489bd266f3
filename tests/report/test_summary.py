"""summarize(): per-arm seed statistics, target, pairwise tests and the ablation, on known data."""

from __future__ import annotations

import json
import statistics

import pytest
from scipy import stats as sp

from hessian_lr.report import summarize
from hessian_lr.report.summary import comparison_epochs, seed_runs
from hessian_lr.results import Results, _json_safe

from report_synthetic import EPOCHS, make_results


def test_arm_summary_matches_the_seeds(synthetic):
    results, runs = synthetic
    summarize(results, runs)
    s = results.optimizers["adam"].summary
    finals = [r["val_loss"] for r in results.optimizers["adam"].final["seeds"]]
    assert s["n_seeds"] == 8 and s["n_diverged"] == 0
    assert s["val_loss_mean"] == pytest.approx(statistics.fmean(finals), abs=1e-15)
    assert s["val_loss_std"] == pytest.approx(statistics.stdev(finals), abs=1e-15)
    ref = sp.t.interval(0.95, 7, loc=statistics.fmean(finals), scale=sp.sem(finals))
    assert s["val_loss_ci95"] == pytest.approx(list(ref), abs=1e-12)
    assert len(s["curve_mean"]) == EPOCHS + 1 and s["curve_ci95"][0] == [2.3, 2.3]
    assert {"test_loss_mean", "test_loss_ci95", "test_accuracy_mean", "test_accuracy_ci95"} <= set(s)


def test_target_is_the_median_final_loss_of_adam_and_time_to_target_per_seed(synthetic):
    results, runs = synthetic
    summarize(results, runs)
    finals = [r["val_loss"] for r in results.optimizers["adam"].final["seeds"]]
    target = results.extra["target"]
    assert target["value"] == statistics.median(finals) and target["arm"] == "adam" and "median" in target["rule"]
    adam = results.optimizers["adam"].summary
    assert adam["reached_target"] >= 4  # the median: at least half of adam's seeds end at or below it
    assert len(adam["time_to_target_epochs"]) == 8
    for r, epoch, wall in zip(results.optimizers["adam"].final["seeds"], adam["time_to_target_epochs"],
                              adam["time_to_target_wall_s"]):
        if epoch is None:
            assert min(r["val_loss_curve"][1:]) > target["value"] and wall is None
        else:
            assert r["val_loss_curve"][epoch] <= target["value"] < min(r["val_loss_curve"][1:epoch] or [9])
            assert wall == r["epoch_wall_s"][epoch - 1]
    # hessian-adam ends ~0.1 higher: it never reaches adam's target, and that is reported, not dropped
    assert results.optimizers["hessian-adam"].summary["time_to_target_epochs"] == [None] * 8


def test_pairwise_differences_are_paired_by_seed(synthetic):
    results, runs = synthetic
    summarize(results, runs)
    pw = results.extra["pairwise"]
    assert pw["baseline"] == "adam" and pw["epochs"] == comparison_epochs(EPOCHS) == [1, 2, 5, 10]
    rows = {(r["metric"], r["epoch"]): r for r in pw["comparisons"]}
    assert set(rows) == {("val_loss", e) for e in (1, 2, 5, 10)} | {("test_loss", 10), ("test_accuracy", 10)}
    a = [r["val_loss_curve"][1] for r in results.optimizers["hessian-adam"].final["seeds"]]
    b = [r["val_loss_curve"][1] for r in results.optimizers["adam"].final["seeds"]]
    early = rows[("val_loss", 1)]
    assert early["mean_diff"] == pytest.approx(statistics.fmean(x - y for x, y in zip(a, b)), abs=1e-15)
    assert early["p_t"] == pytest.approx(sp.ttest_rel(a, b).pvalue, rel=1e-9)
    assert early["ci95"][1] < 0 and rows[("val_loss", 10)]["ci95"][0] > 0  # faster early, adam lower at the end
    assert early["p_wilcoxon"] is not None and early["p_holm"] == early["p_t"]  # one arm: Holm changes nothing


def test_holm_runs_over_the_arms_of_each_epoch():
    results, _ = make_results(arms=("adam", "hessian-adam", "sgd"), ablation=False)
    summarize(results)
    final = [r for r in results.extra["pairwise"]["comparisons"] if r["metric"] == "val_loss" and r["epoch"] == 10]
    assert [r["arm"] for r in final] == ["hessian-adam", "sgd"]
    p = sorted(r["p_t"] for r in final)
    assert sorted(r["p_holm"] for r in final) == pytest.approx([min(1, 2 * p[0]), min(1, max(2 * p[0], p[1]))])
    assert "ablation" not in results.extra


def test_ablation_cells_and_equal_lr_differences(synthetic):
    results, runs = synthetic
    summarize(results, runs)
    ab = results.extra["ablation"]
    cells = {(c["arm"], c["lr_of"]): c for c in ab["cells"]}
    assert set(cells) == {(a, b) for a in ("adam", "hessian-adam") for b in ("adam", "hessian-adam")}
    assert cells[("hessian-adam", "adam")]["lr"] == 0.002 and cells[("adam", "hessian-adam")]["lr"] == 0.004
    eq = {(r["arm"], r["other"]): r for r in ab["equal_lr"] if r["epoch"] == EPOCHS}
    mine = [r["val_loss"] for r in runs["hessian-adam"]["adam"]]
    theirs = [r["val_loss"] for r in results.optimizers["adam"].final["seeds"]]
    assert eq[("hessian-adam", "adam")]["mean_diff"] == pytest.approx(
        statistics.fmean(x - y for x, y in zip(mine, theirs)), abs=1e-15)
    assert eq[("hessian-adam", "adam")]["ci95"][0] > 0  # at adam's lr hessian-adam is worse


def test_single_seed_has_no_intervals_or_tests():
    results, _ = make_results(k=1, ablation=False)
    summarize(results)
    s = results.optimizers["adam"].summary
    assert s["n_seeds"] == 1 and s["val_loss_ci95"] is None and s["val_loss_std"] is None
    assert s["val_loss_mean"] == results.optimizers["adam"].final["val_loss"]
    assert seed_runs(results.optimizers["adam"].final) == [results.optimizers["adam"].final]
    row = results.extra["pairwise"]["comparisons"][0]
    assert row["n"] == 1 and row["ci95"] is None and row["p_t"] is None and row["mean_diff"] is not None


def test_summary_survives_results_json_and_is_idempotent(synthetic):
    results, runs = synthetic
    summarize(results, runs)
    data = json.loads(json.dumps(_json_safe(results.to_dict()), allow_nan=False))
    assert data["optimizers"]["adam"]["val_loss_ci95"] == results.optimizers["adam"].summary["val_loss_ci95"]
    assert {"pairwise", "ablation", "target", "sensitivity"} <= set(data) and "lr_sensitivity" not in data
    again = Results.from_dict(data)
    assert again.to_dict() == data  # exact round trip, summary keys included
    summarize(again)  # ablation runs come back from results.json
    assert json.loads(json.dumps(_json_safe(again.to_dict()))) == data


def test_a_given_target_survives_a_rebuild(synthetic):
    results, _ = synthetic
    summarize(results, target=1.5)
    assert results.extra["target"] == {"value": 1.5, "rule": "given", "arm": None}
    summarize(results)
    assert results.extra["target"]["value"] == 1.5


def test_sensitivity(synthetic):
    results, runs = synthetic
    summarize(results, runs)
    s = results.extra["sensitivity"]["arms"]["adam"]
    # trials at 0.3x (1.24), 1x (1.0), 1.1x (1.019), 3x (1.22), 30x diverged: within 5% -> 1x and 1.1x
    lr = s["hyperparameters"]["lr"]
    assert lr["near_best"] == pytest.approx([0.002, 0.0022]) and s["n_near_best"] == 2
    assert s["n_diverged"] == 1 and lr["diverged"] == pytest.approx([0.06, 0.06]) and lr["best"] == 0.002
    assert (s["best_value"], s["best_trial"], s["studies"]) == (1.0, {"study": 0, "number": 1}, 1)


def test_sensitivity_covers_every_tuned_hyperparameter_and_every_study():
    from report_synthetic import MINE, make_wide_results

    results, runs = make_wide_results()
    summarize(results, runs)
    arms = results.extra["sensitivity"]["arms"]
    assert list(arms["adam"]["hyperparameters"]) == ["lr", "betas[1]", "eps", "amsgrad"]
    assert list(arms["prodigy"]["hyperparameters"]) == ["d_coef"]  # its fixed lr is not tuned
    assert list(arms[MINE]["hyperparameters"]) == ["lr", "k"]
    assert arms["adam"]["n_trials"] == 15 and arms["adam"]["studies"] == 3
    # the best trial over the studies is study 0's second (1.0); within 5%: the 1.1x trials of studies 0-2
    # (1.019, 1.029, 1.039) and the best trials of studies 1 and 2 (1.01, 1.02)
    assert arms["adam"]["n_near_best"] == 6
    amsgrad = arms["adam"]["hyperparameters"]["amsgrad"]
    assert amsgrad == {"best": True, "near_best": [False, True], "diverged": [False]}  # trial 4: 4 % 2 == 0
    assert arms[MINE]["hyperparameters"]["k"]["near_best"] == [2, 3]


def test_the_baseline_is_the_first_arm_named():
    results, _ = make_results(arms=("hessian-adam", "adam"), ablation=False)
    summarize(results)
    assert results.extra["pairwise"]["baseline"] == "hessian-adam" and results.extra["target"]["arm"] == "hessian-adam"
    assert {r["arm"] for r in results.extra["pairwise"]["comparisons"]} == {"adam"}


def test_a_metric_nobody_recorded_gets_no_rows():
    results, _ = make_results(arms=("adam", "sgd"), ablation=False, accuracy=False)
    summarize(results)
    metrics = {r["metric"] for r in results.extra["pairwise"]["comparisons"]}
    assert metrics == {"val_loss", "test_loss"} and results.optimizers["sgd"].summary["test_accuracy_mean"] is None
