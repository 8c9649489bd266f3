"""Statistics for seed-repeated comparisons: means, t confidence intervals, paired tests,
Holm's correction and time-to-target. Plain functions of numbers; ``None`` marks a missing
value (a diverged run) and is left out, with the count kept.

Results never hold NaN or inf (JSON has neither): anything undefined is ``None``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache

__all__ = ["Describe", "Paired", "describe", "t_ci", "paired", "holm", "time_to_target", "median"]

CONFIDENCE = 0.95
MIN_WILCOXON = 6  # below this the exact signed-rank test cannot reach p < 0.05 (two-sided)


@cache
def _scipy_stats():  # noqa: ANN202 - the scipy.stats module
    """scipy.stats, imported on first use: a single-seed run needs no test (the import is ~1 s)."""
    from scipy import stats

    return stats


def _present(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def t_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> list[float] | None:
    """Two-sided t interval for the mean: mean ± t_{(1+c)/2, n-1} · s/√n; ``None`` for n < 2."""
    n = len(values)
    if n < 2:
        return None
    mean, s = statistics.fmean(values), statistics.stdev(values)
    half = float(_scipy_stats().t.ppf((1 + confidence) / 2, n - 1)) * s / math.sqrt(n)
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
            p_t = float(2 * _scipy_stats().t.sf(abs(t), n - 1))
    p_w = None
    if n >= MIN_WILCOXON:
        if all(d == 0 for d in diffs):
            p_w = 1.0
        else:
            p_w = float(_scipy_stats().wilcoxon(diffs).pvalue)
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
