"""Tuning luck: with repeated tuning studies, how much of an arm's difference from the baseline
another study could have reversed (Sivaprasad et al. 2020; AlgoPerf, Dahl et al. 2023, repeats its
studies for the same reason)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from hessian_lr.report.budget import TuningSpread, spreads_from_results
from hessian_lr.report.formatting import fmt, fmt_signed
from hessian_lr.report.verdicts.comparisons import Comparison, find
from hessian_lr.results import Results

__all__ = ["TuningLuck", "tuning_luck"]


@dataclass(frozen=True)
class TuningLuck:
    """How an arm's tuned result varies over ``K`` independent studies (``budget.tuning_spread``) and
    whether its final difference from the baseline is larger than that study-to-study range.

    ``final``: the headline ``arm − baseline`` final validation loss (``None`` for the baseline).
    ``luck``: the larger of the two arms' ranges of their studies' mean final loss.
    """

    EXPORTED: ClassVar[tuple[str, ...]] = ("luck", "text")

    arm: str
    baseline: str
    spread: TuningSpread
    baseline_spread: TuningSpread
    final: Comparison | None

    @property
    def luck(self) -> float | None:
        ranges = [s.final_high - s.final_low for s in (self.spread, self.baseline_spread)
                  if s.final_high is not None and s.final_low is not None]
        return max(ranges) if len(ranges) == 2 else None

    @property
    def text(self) -> str:
        s = self.spread
        text = (f"{self.arm}: best objective over {len(s.best_per_study)} studies median {fmt(s.best_median)} "
                f"(range {fmt(s.best_low)} – {fmt(s.best_high)})")
        if s.final_mean_per_study is not None:
            text += (f", final validation loss median {fmt(s.final_median)} "
                     f"(range {fmt(s.final_low)} – {fmt(s.final_high)})")
        luck, c = self.luck, self.final
        if c is not None and c.mean_diff is not None and luck is not None:
            if abs(c.mean_diff) < luck:
                text += (f"; its final difference from {self.baseline} ({fmt_signed(c.mean_diff)}) is smaller than the "
                         f"study-to-study range ({fmt(luck)}): another tuning study could reverse it")
            else:
                text += (f"; its final difference from {self.baseline} ({fmt_signed(c.mean_diff)}) exceeds the "
                         f"study-to-study range ({fmt(luck)}): tuning luck alone does not explain it")
        return text + "."


def tuning_luck(results: Results, comparisons: Sequence[Comparison]) -> tuple[TuningLuck, ...]:
    """Each arm's ``TuningLuck`` (empty without repeated studies).

    Args:
        results: one workload's summarized results.
        comparisons: their pairwise rows against the baseline.

    Returns:
        One record per arm, the baseline's included.
    """
    if not any(r.studies for r in results.optimizers.values()):
        return ()
    spreads = spreads_from_results(results)
    base = results.extra["pairwise"]["baseline"]
    epochs = int(results.config["epochs"])
    return tuple(TuningLuck(arm=arm, baseline=base, spread=spread, baseline_spread=spreads[base],
                            final=None if arm == base else find(comparisons, arm, "val_loss", epochs))
                 for arm, spread in spreads.items())
