"""Known answers for the statistics: by hand and against scipy on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from hessian_lr.stats import describe, holm, paired, t_ci, time_to_target


def test_ci_of_one_to_five_by_hand():
    # mean 3, s = sqrt(2.5), t_{0.975,4} = 2.7764451051977987
    lo, hi = t_ci([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert lo == pytest.approx(3 - half, abs=1e-12) and hi == pytest.approx(3 + half, abs=1e-12)
    assert (lo, hi) == pytest.approx((1.0367568385224393, 4.963243161477561), abs=1e-12)
    ref = sp.t.interval(0.95, 4, loc=3, scale=sp.sem([1, 2, 3, 4, 5]))
    assert (lo, hi) == pytest.approx(ref, abs=1e-12)


def test_describe_drops_missing_values_and_counts_them():
    d = describe([1.0, None, 2.0, 3.0, float("nan")])
    assert (d.n, d.missing, d.mean, d.std, d.median) == (3, 2, 2.0, 1.0, 2.0)
    assert d.ci95 == pytest.approx([2 - 4.302652729911275 / math.sqrt(3), 2 + 4.302652729911275 / math.sqrt(3)])
    single = describe([1.5])
    assert (single.mean, single.std, single.ci95) == (1.5, None, None)
    assert describe([None]).mean is None


def test_paired_matches_scipy_ttest_rel_and_wilcoxon():
    a = [1.12, 1.08, 1.15, 1.10, 1.09, 1.13, 1.11, 1.07, 1.14, 1.12]
    b = [1.10, 1.09, 1.11, 1.08, 1.10, 1.10, 1.09, 1.08, 1.12, 1.09]
    r = paired(a, b)
    diffs = np.subtract(a, b)
    assert r.n == 10 and r.mean_diff == pytest.approx(diffs.mean(), abs=1e-15)
    assert r.std_diff == pytest.approx(diffs.std(ddof=1), abs=1e-15)
    assert r.p_t == pytest.approx(sp.ttest_rel(a, b).pvalue, rel=1e-10)
    assert r.p_wilcoxon == pytest.approx(sp.wilcoxon(diffs).pvalue, rel=1e-10)
    lo, hi = r.ci95
    half = sp.t.ppf(0.975, 9) * diffs.std(ddof=1) / math.sqrt(10)
    assert (lo, hi) == pytest.approx((diffs.mean() - half, diffs.mean() + half), abs=1e-12)
    # CI excludes 0 exactly when the t-test rejects at 5%
    assert (lo > 0 or hi < 0) == (r.p_t < 0.05)


def test_paired_by_hand_small_sample():
    # diffs 1, 2, 3: mean 2, s 1, t = 2 / (1/sqrt 3) = 3.4641, df 2 -> p = 0.07417990022744858
    r = paired([2, 4, 6], [1, 2, 3])
    assert r.p_t == pytest.approx(0.07417990022744858, rel=1e-9)
    assert r.p_wilcoxon is None  # n < 6


def test_paired_skips_pairs_with_a_missing_side_and_handles_no_spread():
    r = paired([1.0, None, 3.0, 4.0], [0.5, 1.0, None, 3.5])
    assert (r.n, r.missing, r.mean_diff, r.std_diff, r.p_t) == (2, 2, 0.5, 0.0, 0.0)
    same = paired([1.0] * 6, [1.0] * 6)
    assert (same.mean_diff, same.p_t, same.p_wilcoxon) == (0.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        paired([1.0], [1.0, 2.0])


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 (m=3): 0.03, 0.04, max(0.04, 0.04) = 0.04
    assert holm([0.04, 0.01, None, 0.02]) == pytest.approx([0.04, 0.03, None, 0.04])
    assert holm([0.5, 0.6]) == [1.0, 1.0]


def test_time_to_target_on_synthetic_curves():
    curve = [2.3, 1.5, 1.2, 1.05, 0.99, 1.01]
    walls = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert time_to_target(curve, 1.05, walls) == (3, 0.3)  # reaching it exactly counts
    assert time_to_target(curve, 1.0, walls) == (4, 0.4)  # the first time, even if it goes back up
    assert time_to_target(curve, 0.5, walls) == (None, None)  # never: reported, not dropped
    assert time_to_target([2.3, 1.4, None], 1.0, [0.1, 0.2]) == (None, None)  # diverged before
    assert time_to_target([2.3, 3.0], 2.5) == (None, None)  # epoch 0 does not count
    assert time_to_target(curve, None, walls) == (None, None)
    assert time_to_target([0.1, 0.05], 1.0, []) == (1, None)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 10, 19, 30, 100, 1000])
def test_student_t_tail_and_quantile_match_scipy(df):
    from hessian_lr.stats import t_ppf, t_sf

    for t in (0.0, 0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 40.0, -2.0):
        assert t_sf(t, df) == pytest.approx(sp.t.sf(t, df), rel=1e-12, abs=1e-300)
    for q in (0.5, 0.6, 0.9, 0.975, 0.995, 0.9995, 0.025):
        assert t_ppf(q, df) == pytest.approx(sp.t.ppf(q, df), rel=1e-12, abs=1e-15)


def test_wilcoxon_matches_scipy_with_and_without_ties_and_zeros():
    """Every branch of scipy's method="auto": exact (no ties, no zeros), exact permutation (ties or
    zeros, n <= 13), normal approximation (ties, n > 13) and the asymptotic test beyond n = 50."""
    import random

    from hessian_lr.stats import wilcoxon_p

    rng = random.Random(0)
    for trial in range(240):
        n = (6, 7, 8, 10, 12, 13, 15, 20, 40, 60)[trial % 10]
        kind = trial % 3
        if kind == 0:
            d = [rng.gauss(0.1, 1) for _ in range(n)]
        elif kind == 1:
            d = [round(rng.gauss(0.1, 1), 1) for _ in range(n)]  # ties, sometimes zeros
        else:
            d = [rng.choice((0.0, 0.5, -0.5, 1.0, 2.0, -1.0)) for _ in range(n)]
        if any(d):
            assert wilcoxon_p(d) == pytest.approx(float(sp.wilcoxon(d).pvalue), rel=1e-9), d


def test_the_statistics_need_no_scipy_at_run_time():
    """scipy.stats costs ~0.5-1 s to import; a comparison's report must not pay it."""
    import subprocess
    import sys

    code = ("import sys; from hessian_lr.stats import describe, paired; "
            "paired([1.0, 2.0, 3.5, 4.0, 5.0, 6.5, 7.0], [1.1, 1.9, 3.0, 4.2, 4.0, 6.0, 7.7]); describe([1.0, 2.0]); "
            "print('scipy.stats' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


# -- rank correlation and its pooled permutation test ------------------------------------------------------

# Two groups worked out by hand. A: ranks x (3, 2, 1), y (1, 3, 2); centred (1, 0, -1) · (-1, 1, 0) = -1 over
# norm 2, rho = -0.5. B (a tie in y): ranks x (4, 3, 2, 1), y (1.5, 1.5, 3, 4); centred (1.5, 0.5, -0.5, -1.5) ·
# (-1, -1, 0.5, 1.5) = -4.5 over sqrt(5 * 4.5), rho = -3 / sqrt(10).
GROUP_A = ([0.9, 0.8, 0.5], [1.0, 1.2, 1.1])
GROUP_B = ([0.7, 0.6, 0.4, 0.1], [2.0, 2.0, 3.0, 4.0])


def test_spearman_by_hand_with_ties_and_against_scipy():
    from hessian_lr.stats import spearman

    assert spearman(*GROUP_A) == pytest.approx(-0.5, abs=1e-15)
    assert spearman(*GROUP_B) == pytest.approx(-3 / math.sqrt(10), abs=1e-15)
    assert spearman([1, 2, 3], [1.0, math.inf, math.inf]) == pytest.approx(math.sqrt(3) / 2)  # inf ranks last, tied
    assert spearman([1, 2], [3, 3]) is None and spearman([1], [2]) is None
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, 7).astype(float), rng.integers(0, 4, 7).astype(float)
        ours, theirs = spearman(list(x), list(y)), sp.spearmanr(x, y).statistic
        assert (ours is None and np.isnan(theirs)) or ours == pytest.approx(theirs, abs=1e-12)
    with pytest.raises(ValueError, match="paired values"):
        spearman([1, 2], [1, 2, 3])


def test_pooled_permutation_test_exact_by_hand():
    """Pooled rho = (-0.5 - 3/sqrt 10) / 2. A's 3! orderings give rho -1, -0.5, 0.5, 1 with weights 1, 2, 2, 1
    (of 6); B's 12 distinct orderings give dot products 2.5 w_a + 1.5 w_b (w: B's centred x ranks, a != b):
    +-4.5, +-3.5, +-3, +-1.5, +-1, +-0.5, each 1/12. |rho_A + rho_B| >= 0.5 + 3/sqrt 10 when rho_A = +-1 and
    dot_B >= 3 on the same side (3 of 12), or rho_A = +-0.5 and dot_B = 4.5 on that side (1 of 12):
    p = 2 * (1/6 * 3/12 + 2/6 * 1/12) = 10/72."""
    from hessian_lr.stats import pooled_spearman_test

    result = pooled_spearman_test([GROUP_A, GROUP_B])
    assert result.statistic == pytest.approx((-0.5 - 3 / math.sqrt(10)) / 2, abs=1e-15)
    assert result.per_group == pytest.approx((-0.5, -3 / math.sqrt(10)))
    assert (result.method, result.permutations, result.seed) == ("exact", 6 * 24, None)
    assert result.p_value == pytest.approx(10 / 72, abs=1e-15)
    one = pooled_spearman_test([([1, 2, 3], [1, 2, 3])])  # rho = 1: 2 of the 6 orderings have |rho| = 1
    assert (one.statistic, one.p_value) == (1.0, pytest.approx(2 / 6))


def test_pooled_permutation_test_monte_carlo_agrees_and_is_seeded(monkeypatch):
    import hessian_lr.stats as stats

    monkeypatch.setattr(stats, "MAX_EXACT_GROUP", 2)  # too small for these groups: Monte Carlo
    first = stats.pooled_spearman_test([GROUP_A, GROUP_B], resamples=20_000, seed=3)
    assert (first.method, first.permutations, first.seed) == ("monte carlo", 20_000, 3)
    assert first.p_value == pytest.approx(10 / 72, abs=0.01)  # ~4 standard errors
    assert stats.pooled_spearman_test([GROUP_A, GROUP_B], resamples=20_000, seed=3) == first


def test_pooled_permutation_test_refuses_groups_it_cannot_rank():
    from hessian_lr.stats import pooled_spearman_test

    for bad, fragment in (([], "at least one group"), ([([1, 2], [2, 1])], "at least 3 pairs"),
                          ([([1, 2, 3], [5, 5, 5])], "no constant side")):
        with pytest.raises(ValueError, match=fragment):
            pooled_spearman_test(bad)
    with pytest.raises(ValueError, match="resamples must be >= 1"):
        pooled_spearman_test([GROUP_A], resamples=0)


def test_groups_of_one_block_are_permuted_together():
    """A and C share their items (x): permuted together, the 6 orderings give rho_A + rho_C = -1.5, -1.5, 0,
    1.5, 0, 1.5, so p = P(|sum| >= 1.5) = 4/6; as independent groups (each rho -1, -0.5, -0.5, 0.5, 0.5, 1)
    p = 2 * (1/36 + 2 * 2/36) = 10/36."""
    from hessian_lr.stats import pooled_spearman_test

    group_c = ([0.9, 0.8, 0.5], [1.0, 1.1, 1.2])  # rho = -1
    together = pooled_spearman_test([GROUP_A, group_c], blocks=["w", "w"])
    assert together.statistic == pytest.approx(-0.75) and together.p_value == pytest.approx(4 / 6)
    assert together.permutations == 6
    apart = pooled_spearman_test([GROUP_A, group_c])
    assert apart.p_value == pytest.approx(10 / 36) and apart.permutations == 36
    with pytest.raises(ValueError, match="block 'w' mixes groups of 3 and 4 items"):
        pooled_spearman_test([GROUP_A, GROUP_B], blocks=["w", "w"])
    with pytest.raises(ValueError, match="one label per group"):
        pooled_spearman_test([GROUP_A], blocks=["w", "v"])
