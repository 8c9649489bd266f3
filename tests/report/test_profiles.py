"""Performance profiles and their score on hand-made times: misses, ties, a workload nobody reaches,
one workload, one arm; the synthetic results' times; the figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from report_synthetic import make_results

from hessian_lr.report import summarize
from hessian_lr.report.plots import profiles_png
from hessian_lr.report.profiles import (aggregate_seed_times, performance_profiles, profile_score, ratios_to_fastest,
                                        rho, rho_steps, seed_times_from_curves, seed_times_from_results, tau_grid)

INF = math.inf
# w1: a fastest, b twice as slow, c's median seed misses; w2: a and b tie, c twice as slow;
# w3: nobody reaches the target.
TIMES = {"w1": {"a": [10, 10, 12], "b": [20, 18, 22], "c": [None, None, 10]},
         "w2": {"a": [5], "b": [5], "c": [10]},
         "w3": {"a": [None, None], "b": [None], "c": [None]}}


def test_seeds_aggregate_to_the_median_seed_with_misses_as_infinite():
    assert aggregate_seed_times([3, 1, 2]) == 2
    assert aggregate_seed_times([1, 2, None]) == 2  # two of three reached: the median seed did
    assert aggregate_seed_times([1, None, None]) == INF  # the median seed never reached
    assert aggregate_seed_times([4, 1, 3, 2]) == 2  # even count: the lower middle seed
    assert aggregate_seed_times([1, 2, None, None]) == 2  # half reached
    assert aggregate_seed_times([1, None, None, None]) == INF
    assert aggregate_seed_times([None]) == INF
    for bad in ([], [0], [-1.0], [float("nan")]):
        with pytest.raises(ValueError):
            aggregate_seed_times(bad)


def test_ratios_to_the_fastest():
    assert ratios_to_fastest({"a": 10, "b": 20, "c": INF}) == {"a": 1.0, "b": 2.0, "c": INF}
    assert ratios_to_fastest({"a": 5, "b": 5}) == {"a": 1.0, "b": 1.0}  # a tie: both fastest
    assert ratios_to_fastest({"a": INF, "b": INF}) == {"a": INF, "b": INF}  # nobody: missed by all


def test_profiles_and_scores_by_hand():
    p = performance_profiles(TIMES)
    assert p.arms == ("a", "b", "c") and p.workloads == ("w1", "w2", "w3")
    assert p.times["w1"] == {"a": 10, "b": 20, "c": INF}
    assert p.ratios == {"w1": {"a": 1.0, "b": 2.0, "c": INF}, "w2": {"a": 1.0, "b": 1.0, "c": 2.0},
                        "w3": {"a": INF, "b": INF, "c": INF}}
    # the workload nobody reaches stays in the denominator: nobody gets above 2/3
    assert [p.rho_at("a", t) for t in (1, 4)] == [2 / 3, 2 / 3]
    assert [p.rho_at("b", t) for t in (1, 1.999, 2, 4)] == [1 / 3, 1 / 3, 2 / 3, 2 / 3]
    assert [p.rho_at("c", t) for t in (1, 1.999, 2)] == [0, 0, 1 / 3]
    # score = sum over workloads of max(0, 4 - r) / (3 * 3)
    assert p.scores["a"] == pytest.approx((3 + 3 + 0) / 9, abs=1e-15)
    assert p.scores["b"] == pytest.approx((2 + 3 + 0) / 9, abs=1e-15)
    assert p.scores["c"] == pytest.approx((0 + 2 + 0) / 9, abs=1e-15)
    assert json.loads(json.dumps(p.to_dict(), allow_nan=False))["ratios"]["w1"]["c"] is None


def test_the_grid_matches_the_exact_step_function_and_the_score_its_integral():
    p = performance_profiles({"w1": {"a": [10], "b": [23.3]}, "w2": {"a": [30], "b": [10]},
                              "w3": {"a": [10], "b": [37.7]}})
    grid = tau_grid()
    assert len(p.taus) == 301 and p.taus[0] == 1.0 and p.taus[-1] == 4.0 and np.allclose(np.diff(grid), 0.01)
    for arm in p.arms:
        assert p.rho[arm] == tuple(p.rho_at(arm, t) for t in p.taus)  # no ratio lies on a grid point
        trapezoid = float(np.sum((np.array(p.rho[arm][1:]) + p.rho[arm][:-1]) / 2 * np.diff(grid))) / 3
        assert trapezoid == pytest.approx(p.scores[arm], abs=0.01)  # AlgoPerf's rule on its grid
    assert p.scores["a"] == pytest.approx((3 + 1 + 3) / 9)  # a's ratio 3 on w2
    assert p.scores["b"] == pytest.approx((4 - 2.33 + 3 + 4 - 3.77) / 9)


def test_one_workload_and_one_arm():
    one = performance_profiles({"w": {"a": [10], "b": [25]}})
    assert one.scores == pytest.approx({"a": 1.0, "b": 0.5}) and one.rho_at("b", 2.5) == 1.0
    alone = performance_profiles({"w1": {"a": [7]}, "w2": {"a": [None]}})
    assert alone.ratios == {"w1": {"a": 1.0}, "w2": {"a": INF}} and alone.scores == {"a": 0.5}
    slow = performance_profiles({"w": {"a": [1], "b": [5]}})  # beyond 4x: never within the profile
    assert slow.scores["b"] == 0.0 and slow.rho_at("b", 4) == 0.0


def test_exact_helpers():
    assert rho([1.0, 2.0, INF], 2.0) == 2 / 3
    assert profile_score([1.0] * 4) == 1.0 and profile_score([INF, INF]) == 0.0
    assert profile_score([2.5], tau_max=3.0) == 0.25
    assert rho_steps([1.0, 2.5, INF, 5.0]) == ([1.0, 2.5, 4.0], [0.25, 0.5, 0.5])
    with pytest.raises(ValueError):
        profile_score([])


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="at least one workload"):
        performance_profiles({})
    with pytest.raises(ValueError, match="same arms"):
        performance_profiles({"w1": {"a": [1], "b": [2]}, "w2": {"a": [1]}})


def test_times_from_summarized_results():
    results, _ = make_results(ablation=False)
    summarize(results)
    steps = seed_times_from_results(results, "steps", steps_per_epoch=35)
    epochs = results.optimizers["adam"].summary["time_to_target_epochs"]
    assert steps["adam"] == [None if e is None else 35 * e for e in epochs]
    assert steps["hessian-adam"] == [None] * 8  # ends above adam's target
    walls = seed_times_from_results(results, "wall_s")
    assert walls["adam"] == results.optimizers["adam"].summary["time_to_target_wall_s"]
    p = performance_profiles({"mnist1d-mlp": steps})
    # the target is adam's median final loss: at least half of its 8 seeds reach it, so adam does
    assert p.ratios["mnist1d-mlp"] == {"adam": 1.0, "hessian-adam": INF}
    assert p.scores == {"adam": 1.0, "hessian-adam": 0.0}
    with pytest.raises(ValueError, match="clock"):
        seed_times_from_results(results, "epochs")


def test_times_from_curves():
    curves = [[2.3, 1.5, 1.1, 0.9], [2.3, 1.0, 0.95, 0.9], [2.3, 1.4, None, None], [2.3, 1.3, 1.2, 1.1]]
    assert seed_times_from_curves(curves, 1.0) == [3, 1, None, None]
    clocks = [[0.5, 1.0, 1.5], [0.4, 0.8, 1.2], [0.5, 1.0, 1.5], [0.5, 1.0, 1.5]]
    assert seed_times_from_curves(curves, 1.0, clocks) == [1.5, 0.4, None, None]


def test_profiles_figure_is_deterministic():
    p = performance_profiles(TIMES)
    png = profiles_png(p)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == profiles_png(performance_profiles(TIMES))
    assert png != profiles_png(performance_profiles({**TIMES, "w3": {"a": [1], "b": [1], "c": [1]}}))
