"""Statistics for seed-repeated comparisons: means, t confidence intervals, paired tests,
Holm's correction and time-to-target. Plain functions of numbers; ``None`` marks a missing
value (a diverged run) and is left out, with the count kept.

Results never hold NaN or inf (JSON has neither): anything undefined is ``None``.

The Student t distribution and the Wilcoxon signed-rank test are computed here rather than taken
from scipy.stats, whose import costs ~0.5–1 s of every comparison (tests pin both against scipy):
the t tail through the regularized incomplete beta function (Lentz's continued fraction, as in
Press et al., *Numerical Recipes*, §6.4), its quantile by bisection on it; the signed-rank test as
scipy's ``wilcoxon`` decides by default — the exact null distribution of W+ without ties or zeros,
the exact sign-flip permutation distribution with them for n ≤ 13, the normal approximation
(tie-corrected variance, no continuity correction) beyond.

Rank correlation across a few items in several groups (:func:`spearman`,
:func:`pooled_spearman_test`): Spearman's ρ with average ranks for ties, pooled as the mean of
the groups' ρ and tested by permuting the labels within each group independently — exactly, by
convolving the groups' permutation distributions, when that stays small; else by a seeded Monte
Carlo draw.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

__all__ = ["Describe", "Paired", "describe", "t_ci", "paired", "holm", "time_to_target", "median", "t_sf", "t_ppf",
           "wilcoxon_p", "spearman", "average_ranks", "PooledCorrelation",
           "pooled_spearman_test"]

CONFIDENCE = 0.95
MIN_WILCOXON = 6  # below this the exact signed-rank test cannot reach p < 0.05 (two-sided)


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast on this side only
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return math.exp(log_front) * fraction / a


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@cache
def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on :func:`t_sf` to ~1e-15 relative)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    low, high = 0.0, 1.0
    while t_sf(high, df) > 1.0 - q:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_sf(middle, df) > 1.0 - q:
            low = middle
        else:
            high = middle
        if high - low <= 1e-15 * high:
            break
    return 0.5 * (low + high)


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``, ties sharing the mean of the ranks they span (``inf`` ranks last)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and values[order[stop + 1]] == values[order[start]]:
            stop += 1
        for position in range(start, stop + 1):
            ranks[order[position]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


@cache
def _signed_rank_counts(n: int) -> tuple[int, ...]:
    """``counts[w]``: how many of the 2^n sign patterns of ranks 1..n give W+ = w."""
    counts = [1] + [0] * (n * (n + 1) // 2)
    for rank in range(1, n + 1):
        for w in range(len(counts) - 1, rank - 1, -1):
            counts[w] += counts[w - rank]
    return tuple(counts)


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of ``diffs`` (zeros dropped, as
    scipy's default ``zero_method="wilcox"``), choosing the method as scipy's ``method="auto"``."""
    nonzero = [d for d in diffs if d != 0]
    n = len(nonzero)
    if n == 0:
        return 1.0
    ranks = average_ranks([abs(d) for d in nonzero])
    w_plus = sum(r for r, d in zip(ranks, nonzero) if d > 0)
    ties = len(set(abs(d) for d in nonzero)) < n
    if not ties and len(nonzero) == len(diffs) and n <= 50:
        counts = _signed_rank_counts(n)
        total = 2.0**n
        sf = sum(counts[math.floor(w_plus):]) / total  # P(W+ >= w)
        cdf = sum(counts[: math.ceil(w_plus) + 1]) / total  # P(W+ <= w)
        return min(1.0, 2.0 * min(sf, cdf))
    if len(diffs) <= 13:  # every sign flip of every difference (zeros stay zero): exact
        rank_of = _rank_nonzero([abs(d) for d in diffs])
        tolerance = 1e-14 * abs(w_plus)  # as scipy's permutation_test compares
        less = greater = 0
        for pattern in range(2 ** len(diffs)):
            w = sum(rank for i, rank in enumerate(rank_of) if (pattern >> i) & 1)
            less += w <= w_plus + tolerance
            greater += w >= w_plus - tolerance
        return min(1.0, 2.0 * min(less, greater) / 2 ** len(diffs))
    counts_of = {}
    for magnitude in (abs(d) for d in nonzero):
        counts_of[magnitude] = counts_of.get(magnitude, 0) + 1
    tie_correction = sum(t**3 - t for t in counts_of.values())
    se = math.sqrt((n * (n + 1) * (2 * n + 1) - tie_correction / 2) / 24)
    z = (w_plus - n * (n + 1) / 4) / se
    return min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))


def _rank_nonzero(magnitudes: Sequence[float]) -> list[float]:
    """Average ranks of the non-zero magnitudes among themselves (zeros get rank 0)."""
    nonzero = [m for m in magnitudes if m != 0]
    ranks = iter(average_ranks(nonzero))
    return [next(ranks) if m != 0 else 0.0 for m in magnitudes]


def _present(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def t_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> list[float] | None:
    """Two-sided t interval for the mean: mean ± t_{(1+c)/2, n-1} · s/√n; ``None`` for n < 2."""
    n = len(values)
    if n < 2:
        return None
    mean, s = statistics.fmean(values), statistics.stdev(values)
    half = t_ppf((1 + confidence) / 2, n - 1) * s / math.sqrt(n)
    return [mean - half, mean + half]


@dataclass(frozen=True)
class Describe:
    n: int  # values present
    missing: int  # None / non-finite values left out
    mean: float | None
    std: float | None  # sample standard deviation (n - 1); None for n < 2
    ci95: list[float] | None
    median: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def describe(values: Sequence[float | None]) -> Describe:
    present = _present(values)
    n = len(present)
    return Describe(
        n=n,
        missing=len(values) - n,
        mean=statistics.fmean(present) if n else None,
        std=statistics.stdev(present) if n >= 2 else None,
        ci95=t_ci(present),
        median=statistics.median(present) if n else None,
    )


def median(values: Sequence[float | None]) -> float | None:
    present = _present(values)
    return statistics.median(present) if present else None


@dataclass(frozen=True)
class Paired:
    """``a - b`` over the pairs where both are present (same seed, so same init and batch order)."""

    n: int
    missing: int  # pairs with a value missing on either side
    mean_diff: float | None
    std_diff: float | None
    ci95: list[float] | None
    p_t: float | None  # paired (one-sample on the differences) t-test, two-sided
    p_wilcoxon: float | None  # Wilcoxon signed-rank, two-sided; only for n >= MIN_WILCOXON

    def to_dict(self) -> dict:
        return asdict(self)


def paired(a: Sequence[float | None], b: Sequence[float | None]) -> Paired:
    if len(a) != len(b):
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    n = len(diffs)
    mean = statistics.fmean(diffs) if n else None
    std = statistics.stdev(diffs) if n >= 2 else None
    p_t = None
    if n >= 2:
        if std == 0:
            p_t = 1.0 if mean == 0 else 0.0  # no spread: the difference is exactly known
        else:
            t = mean / (std / math.sqrt(n))
            p_t = 2 * t_sf(abs(t), n - 1)
    p_w = None
    if n >= MIN_WILCOXON:
        if all(d == 0 for d in diffs):
            p_w = 1.0
        else:
            p_w = wilcoxon_p(diffs)
    return Paired(n=n, missing=len(a) - n, mean_diff=mean, std_diff=std, ci95=t_ci(diffs), p_t=p_t, p_wilcoxon=p_w)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (``None`` entries stay ``None`` and do not count)."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def time_to_target(curve: Sequence[float | None], target: float | None,
                   epoch_wall_s: Sequence[float] = ()) -> tuple[int | None, float | None]:
    """First epoch ``e >= 1`` with ``curve[e] <= target`` and the cumulative training seconds at its end
    (``epoch_wall_s[e - 1]``); ``(None, None)`` when the run never reaches it (or diverges first)."""
    if target is None:
        return None, None
    for epoch in range(1, len(curve)):
        value = curve[epoch]
        if value is None:
            return None, None
        if value <= target:
            wall = epoch_wall_s[epoch - 1] if epoch - 1 < len(epoch_wall_s) else None
            return epoch, wall
    return None, None


# -- rank correlation, pooled over groups, with a permutation test -----------------------------------------

MAX_EXACT_GROUP = 8  # a group's n! orderings are enumerated up to 8! = 40,320
MAX_EXACT_VALUES = 200_000  # distinct pooled values the exact convolution may hold before Monte Carlo takes over
MONTE_CARLO_RESAMPLES = 20_000  # p's Monte Carlo standard error <= 0.0036 (0.0015 near p = 0.05)


def _centred_ranks(values: Sequence[float]) -> list[float]:
    """Average ranks minus their mean (n + 1) / 2: multiples of 1/2, so their dot products are exact."""
    ranks = average_ranks(values)
    middle = (len(values) + 1) / 2
    return [r - middle for r in ranks]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation: the Pearson correlation of the average ranks (ties share the
    mean of the ranks they span, as ``scipy.stats.spearmanr``).

    ρ = Σ_i (r_i − r̄)(s_i − s̄) / √(Σ_i (r_i − r̄)² · Σ_i (s_i − s̄)²), r and s the ranks of x and y.

    Args:
        x, y: paired values (``math.inf`` allowed: it ranks last).

    Returns:
        ρ in [-1, 1]; ``None`` for fewer than two pairs or a side whose values are all equal.

    Raises:
        ValueError: ``x`` and ``y`` differ in length.
    """
    if len(x) != len(y):
        raise ValueError(f"spearman needs paired values, got {len(x)} x and {len(y)} y")
    if len(x) < 2:
        return None
    rx, ry = _centred_ranks(x), _centred_ranks(y)
    norm = math.sqrt(sum(r * r for r in rx) * sum(r * r for r in ry))
    return sum(a * b for a, b in zip(rx, ry)) / norm if norm > 0 else None


@dataclass(frozen=True)
class PooledCorrelation:
    """:func:`pooled_spearman_test`'s result.

    ``statistic``: the mean over the groups of Spearman's ρ; ``per_group``: each group's ρ;
    ``p_value``: two-sided, P(|mean ρ| >= |observed|) when the labels are permuted within every
    group (or block of groups) independently; ``method``: ``"exact"`` (every permutation of every group, weighted
    equally) or ``"monte carlo"`` (``permutations`` random draws, seed ``seed``, p = (1 + hits) /
    (1 + draws) as Phipson & Smyth 2010); ``permutations``: the permutations enumerated (exact:
    the product of the blocks' n!) or drawn.
    """

    statistic: float
    per_group: tuple[float, ...]
    p_value: float
    method: str
    permutations: int
    seed: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


Prepared = tuple[list[float], list[float], float]  # a group's centred x ranks, centred y ranks, norm


def _block_sum(block: Sequence[Prepared], order: Sequence[int]) -> float:
    """Σ over the block's groups of ρ with every group's y reordered by ``order``."""
    return sum(sum(a * ry[i] for a, i in zip(rx, order)) / norm for rx, ry, norm in block)


def _exact_distribution(blocks: Sequence[Sequence[Prepared]]) -> tuple[Any, Any] | None:
    """The pooled sum of ρ over all joint permutations: ``(values, probabilities)`` arrays, or None
    when a block is too large to enumerate or the distinct sums grow past MAX_EXACT_VALUES."""
    import numpy as np

    values, probabilities = np.zeros(1), np.ones(1)
    for block in blocks:
        n = len(block[0][0])
        if n > MAX_EXACT_GROUP:
            return None
        counts: dict[float, int] = {}
        for order in itertools.permutations(range(n)):
            key = round(_block_sum(block, order), 12)  # one value, however the orderings reach it
            counts[key] = counts.get(key, 0) + 1
        sums = np.round(np.add.outer(values, np.array(list(counts))).ravel(), 12)
        weights = np.array(list(counts.values()), dtype=float) / math.factorial(n)
        values, inverse = np.unique(sums, return_inverse=True)
        probabilities = np.bincount(inverse.ravel(), weights=np.outer(probabilities, weights).ravel())
        if len(values) > MAX_EXACT_VALUES:
            return None
    return values, probabilities


def pooled_spearman_test(groups: Sequence[tuple[Sequence[float], Sequence[float]]], *,
                         blocks: Sequence[Any] | None = None, resamples: int = MONTE_CARLO_RESAMPLES,
                         seed: int = 0) -> PooledCorrelation:
    """Is there a rank correlation between ``x`` and ``y`` within groups, pooled over the groups?

    The statistic is the mean over groups of Spearman's ρ (each group weighs the same, whatever
    its size). Under the null hypothesis that ``y`` is unrelated to ``x`` within each group, every
    assignment of a group's ``y`` values to its items is equally likely, independently across
    blocks of groups (by default each group is a block of its own; the groups of one block — the
    same items measured twice, say — are permuted together, by one ordering of their items); the
    two-sided p-value is the share of those joint assignments whose mean ρ is at least as far from 0
    as the observed one (a 1e-12 tolerance for rounding). The distribution is exact — each block's
    n! orderings enumerated and convolved over the blocks — when every block has at most
    :data:`MAX_EXACT_GROUP` items and the pooled values stay under :data:`MAX_EXACT_VALUES`;
    otherwise ``resamples`` joint permutations are drawn with ``random.Random(seed)``.

    Args:
        groups: ``(x, y)`` per group, each at least 3 pairs with neither side constant.
        blocks: a label per group; groups with the same label form one block and must have the same
            number of items, in the same order (default: every group its own block).
        resamples: Monte Carlo draws when the exact distribution is too large (at least 1).
        seed: the Monte Carlo generator's seed.

    Returns:
        A :class:`PooledCorrelation`.

    Raises:
        ValueError: no groups, a group of fewer than 3 pairs or with a constant side, blocks of the
            wrong length or mixing group sizes, or ``resamples`` < 1.
    """
    if not groups:
        raise ValueError("pooled_spearman_test needs at least one group")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    labels = list(range(len(groups))) if blocks is None else list(blocks)
    if len(labels) != len(groups):
        raise ValueError(f"blocks must give one label per group, got {len(labels)} for {len(groups)} groups")
    by_block: dict[Any, list[Prepared]] = {}
    rhos = []
    for index, ((x, y), label) in enumerate(zip(groups, labels)):
        rho = spearman(x, y)
        if len(x) < 3 or rho is None:
            raise ValueError(f"group {index} needs at least 3 pairs and no constant side, got x={list(x)}, y={list(y)}")
        rx, ry = _centred_ranks(x), _centred_ranks(y)
        block = by_block.setdefault(label, [])
        if block and len(block[0][0]) != len(rx):
            raise ValueError(f"block {label!r} mixes groups of {len(block[0][0])} and {len(rx)} items")
        block.append((rx, ry, math.sqrt(sum(r * r for r in rx) * sum(r * r for r in ry))))
        rhos.append(rho)
    k = len(rhos)
    observed = sum(rhos) / k
    threshold = abs(observed) - 1e-12
    distribution = _exact_distribution(list(by_block.values()))
    if distribution is not None:
        values, probabilities = distribution
        p_value = min(1.0, float(probabilities[abs(values / k) >= threshold].sum()))
        return PooledCorrelation(statistic=observed, per_group=tuple(rhos), p_value=p_value, method="exact",
                                 permutations=math.prod(math.factorial(len(b[0][0])) for b in by_block.values()))
    rng = random.Random(seed)
    hits = 0
    for _ in range(resamples):
        pooled = sum(_block_sum(block, rng.sample(range(len(block[0][0])), len(block[0][0])))
                     for block in by_block.values())
        hits += abs(pooled / k) >= threshold
    return PooledCorrelation(statistic=observed, per_group=tuple(rhos), p_value=(1 + hits) / (1 + resamples),
                             method="monte carlo", permutations=resamples, seed=seed)
