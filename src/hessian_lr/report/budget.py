"""Budget curves and tuning luck: how good an arm's tuned result is as a function of the tuning
budget, and how much it varies between independent tuning studies (numpy only, no training).

Sivaprasad et al. 2020 ("Optimizer Benchmarking Needs to Account for Hyperparameter Tuning",
ICML) score optimizers by the expected best validation loss after ``n`` trials of a tuning study,
for every ``n``: an optimizer that is good only after many trials is worse for a small budget.
AlgoPerf (Dahl et al. 2023, arXiv:2306.07179) repeats each tuning study (v0.6: 3 studies of 5
trials) and takes the median over the studies, so that one lucky study does not decide a score.

Inputs here are ``K`` independent studies per arm, each a list of trial values (the objective:
validation loss) in trial order, ``None`` for a trial that diverged or failed.

- ``best_so_far``: the best value after ``n = 1 … len(study)`` trials of one study. Undefined
  (``None``) until the study's first successful trial.
- ``budget_curve``: per ``n``, the median and the range (min, max) of the best-so-far over the
  studies. A study with no success yet counts as ``+inf`` (worse than any loss, as AlgoPerf counts
  a missed target): the median is undefined while at least half of the studies (for an even
  count, one of the two middle ones) have none, the top of the range while any has none, the
  bottom while all have none. ``n`` runs up to the shortest study, a budget every study spent.
- ``tuning_spread``: per study the tuned result (its best value) and, when given, the mean final
  (seed-repeated) validation loss of the setting it picked, with their median and range: the
  study-to-study spread, i.e. tuning luck.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hessian_lr.results import Results

__all__ = ["BudgetCurve", "TuningSpread", "best_so_far", "median_and_range", "budget_curve", "budget_curves",
           "tuning_spread", "studies_from_results", "spreads_from_results"]


def best_so_far(values: Sequence[float | None]) -> list[float | None]:
    """The best (lowest) value after each trial of one study.

    Args:
        values: trial values in trial order; ``None`` (or a non-finite value) = diverged or failed.

    Returns:
        One entry per trial: the lowest value so far, ``None`` before the first successful trial.
    """
    best: float | None = None
    out: list[float | None] = []
    for value in values:
        if value is not None and math.isfinite(value) and (best is None or value < best):
            best = float(value)
        out.append(best)
    return out


def median_and_range(values: Sequence[float | None]) -> tuple[float | None, float | None, float | None]:
    """Median, minimum and maximum over studies, a missing value counting as ``+inf``.

    Args:
        values: one value per study (``None`` = the study has none).

    Returns:
        ``(median, low, high)``, each ``None`` where it would be infinite.

    Raises:
        ValueError: no values.
    """
    if not values:
        raise ValueError("median_and_range needs at least one study")
    array = np.array([math.inf if v is None else float(v) for v in values])
    return tuple(float(x) if math.isfinite(x) else None  # type: ignore[return-value]
                 for x in (np.median(array), array.min(), array.max()))


@dataclass(frozen=True)
class BudgetCurve:
    """One arm's best validation loss against the number of tuning trials, over ``studies`` studies.

    ``budgets[i]`` trials: ``median[i]`` over the studies, ``low[i]`` / ``high[i]`` their range,
    ``defined[i]`` the number of studies with a successful trial by then.
    """

    arm: str
    studies: int
    budgets: tuple[int, ...]
    median: tuple[float | None, ...]
    low: tuple[float | None, ...]
    high: tuple[float | None, ...]
    defined: tuple[int, ...]


def budget_curve(studies: Sequence[Sequence[float | None]], arm: str = "") -> BudgetCurve:
    """The budget curve of one arm (see the module docstring).

    Args:
        studies: ``K ≥ 1`` independent studies, each its trial values in trial order (``None`` =
            diverged / failed).
        arm: the arm's name, kept on the record.

    Returns:
        The ``BudgetCurve`` for ``n = 1 …`` the shortest study's length.

    Raises:
        ValueError: no studies, or an empty study.
    """
    if not studies or not all(studies):
        raise ValueError("a budget curve needs at least one study, each with at least one trial")
    length = min(len(s) for s in studies)
    best = [best_so_far(s[:length]) for s in studies]
    per_budget = [[b[n] for b in best] for n in range(length)]
    stats = [median_and_range(values) for values in per_budget]
    return BudgetCurve(arm=arm, studies=len(studies), budgets=tuple(range(1, length + 1)),
                       median=tuple(s[0] for s in stats), low=tuple(s[1] for s in stats),
                       high=tuple(s[2] for s in stats),
                       defined=tuple(sum(v is not None for v in values) for values in per_budget))


def budget_curves(studies_by_arm: Mapping[str, Sequence[Sequence[float | None]]]) -> dict[str, BudgetCurve]:
    """``budget_curve`` of every arm (arm → its studies), in the mapping's order."""
    return {arm: budget_curve(studies, arm) for arm, studies in studies_by_arm.items()}


@dataclass(frozen=True)
class TuningSpread:
    """How an arm's tuned result varies between independent tuning studies.

    ``best_per_study``: each study's best trial value (``None``: every trial failed);
    ``final_mean_per_study``: the mean final validation loss of the setting each study picked, when
    those reruns exist. ``*_median`` / ``*_low`` / ``*_high``: over the studies (``median_and_range``).
    """

    arm: str
    best_per_study: tuple[float | None, ...]
    best_median: float | None
    best_low: float | None
    best_high: float | None
    final_mean_per_study: tuple[float | None, ...] | None = None
    final_median: float | None = None
    final_low: float | None = None
    final_high: float | None = None

    @property
    def best_range(self) -> float | None:
        """``best_high − best_low``: the tuning luck in the tuned objective (None when undefined)."""
        return None if self.best_low is None or self.best_high is None else self.best_high - self.best_low


def tuning_spread(studies: Sequence[Sequence[float | None]], final_means: Sequence[float | None] | None = None,
                  arm: str = "") -> TuningSpread:
    """Per-study tuned results of one arm and their spread.

    Args:
        studies: the arm's independent studies, each its trial values (``None`` = failed).
        final_means: optional, per study, the mean final validation loss of its chosen setting
            over the seed reruns (``None`` = not rerun / every rerun diverged).
        arm: the arm's name, kept on the record.

    Returns:
        The ``TuningSpread``.

    Raises:
        ValueError: no studies, or ``final_means`` of another length.
    """
    if not studies:
        raise ValueError("tuning_spread needs at least one study")
    best = tuple(best_so_far(s)[-1] if s else None for s in studies)
    best_median, best_low, best_high = median_and_range(best)
    finals, (final_median, final_low, final_high) = None, (None, None, None)
    if final_means is not None:
        if len(final_means) != len(studies):
            raise ValueError(f"final_means has {len(final_means)} entries for {len(studies)} studies")
        finals = tuple(None if v is None else float(v) for v in final_means)
        final_median, final_low, final_high = median_and_range(finals)
    return TuningSpread(arm=arm, best_per_study=best, best_median=best_median, best_low=best_low,
                        best_high=best_high, final_mean_per_study=finals, final_median=final_median,
                        final_low=final_low, final_high=final_high)


def studies_from_results(results: Results) -> dict[str, list[list[float | None]]]:
    """Each arm's tuning studies of a ``compare`` run, as ``budget_curve`` takes them.

    Args:
        results: a run's results; each trial names its study (``TrialRecord.study``; ``--studies K``
            gives ``0 … K-1``, one study otherwise), trials in trial-number order within it.

    Returns:
        arm → one list of trial values per study, in study order (``None`` = failed).
    """
    out: dict[str, list[list[float | None]]] = {}
    for arm, r in results.optimizers.items():
        indices = sorted({t.study for t in r.trials}) or [0]
        out[arm] = [[t.value for t in sorted((t for t in r.trials if t.study == i), key=lambda t: t.number)]
                    for i in indices]
    return out


def _study_final_mean(study: Mapping[str, Any]) -> float | None:
    """The mean final validation loss of a study's reruns (``None``: none, or every rerun diverged)."""
    final = study.get("final") or {}
    runs = final.get("seeds") or ([final] if final else [])
    values = [v for r in runs if (v := r.get("val_loss")) is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def spreads_from_results(results: Results) -> dict[str, TuningSpread]:
    """Each arm's ``tuning_spread`` over its studies, with the final reruns of each study's pick.

    Args:
        results: a run with ``--studies K``: ``ArmResults.studies`` holds per study its best value and
            final reruns (``{"study", "best_value", "final": {..., "seeds": [...]}}``). Without them
            (one study) only the trials' best values are used.

    Returns:
        arm → its ``TuningSpread`` (studies in the order of ``studies_from_results``).
    """
    spreads = {}
    for arm, studies in studies_from_results(results).items():
        records = {int(s.get("study", i)): s for i, s in enumerate(results.optimizers[arm].studies)}
        indices = sorted({t.study for t in results.optimizers[arm].trials}) or [0]
        finals = [_study_final_mean(records[i]) if i in records else None for i in indices] if records else None
        spreads[arm] = tuning_spread(studies, finals, arm)
    return spreads
