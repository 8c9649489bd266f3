"""Paired differences ``arm − baseline`` as records, and how they came out.

A difference is real when the two-sided 95% t interval of the paired (same seed) difference
excludes 0 (``Comparison.outcome``); a claim against the baseline must also survive Holm's
correction over the arms compared at that epoch (Holm 1979; ``Comparison.significant``). A question
counts a difference only when both hold (``held``). A single seed gives no interval, so no claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any, ClassVar

from hessian_lr.report.formatting import fmt_ci, fmt_p_inline, fmt_signed
from hessian_lr.report.summary import paired_rows
from hessian_lr.results import Results

__all__ = ["ALPHA", "HIGHER_IS_BETTER", "Outcome", "direction", "Comparison", "difference_text", "held", "short_text",
           "find", "comparisons_of", "versus", "final_comparisons"]

ALPHA = 0.05
HIGHER_IS_BETTER = {"val_loss": False, "test_loss": False, "test_accuracy": True}


class Outcome(str, Enum):
    """How a paired difference ``arm − baseline`` came out, seen from the arm."""

    BETTER = "better"  # the 95% CI lies entirely on the arm's good side of 0
    WORSE = "worse"  # entirely on its bad side
    TIE = "tie"  # the CI contains 0: within seed noise
    UNTESTABLE = "untestable"  # no CI (fewer than two paired seeds)


def direction(row: Mapping[str, Any]) -> int | None:
    """Where the 95% CI of a difference lies: -1 below 0, +1 above, 0 around it, None without a CI.

    Args:
        row: a mapping with a ``ci95`` entry (``[low, high]`` or ``None``), e.g. a pairwise row.

    Returns:
        -1, 0, +1 or None.
    """
    ci = row.get("ci95")
    if ci is None:
        return None
    return -1 if ci[1] < 0 else 1 if ci[0] > 0 else 0


@dataclass(frozen=True)
class Comparison:
    """One paired difference ``arm − baseline`` (same seeds), as ``summary`` computed it.

    ``metric`` is ``val_loss`` (at ``epoch``), ``test_loss`` or ``test_accuracy`` (at the last epoch).
    ``p_holm`` is None where no correction applies (a single arm, the equal-lr ablation).
    """

    EXPORTED: ClassVar[tuple[str, ...]] = ("outcome", "survives_holm", "significant")

    arm: str
    baseline: str
    metric: str
    epoch: int
    n: int
    mean_diff: float | None
    ci95: tuple[float, float] | None
    p_t: float | None
    p_wilcoxon: float | None
    p_holm: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Comparison:
        """A comparison from a pairwise row (``baseline``) or an equal-lr ablation row (``other``)."""
        ci = row.get("ci95")
        return cls(arm=row["arm"], baseline=row["baseline"] if "baseline" in row else row["other"],
                   metric=row.get("metric", "val_loss"), epoch=int(row["epoch"]), n=int(row["n"]),
                   mean_diff=row["mean_diff"], ci95=None if ci is None else (ci[0], ci[1]), p_t=row.get("p_t"),
                   p_wilcoxon=row.get("p_wilcoxon"), p_holm=row.get("p_holm"))

    @property
    def direction(self) -> int | None:
        """-1 / 0 / +1 / None: where the CI lies relative to 0 (see ``direction``)."""
        return direction({"ci95": self.ci95})

    @property
    def higher_is_better(self) -> bool:
        """True for accuracy: there a positive difference is the arm's good side."""
        return HIGHER_IS_BETTER.get(self.metric, False)

    @property
    def outcome(self) -> Outcome:
        d = self.direction
        if d is None:
            return Outcome.UNTESTABLE
        if d == 0:
            return Outcome.TIE
        return Outcome.BETTER if (d > 0) == self.higher_is_better else Outcome.WORSE

    @property
    def survives_holm(self) -> bool:
        """Holm-adjusted p < ALPHA; a comparison without a Holm p stands on its CI alone."""
        return self.p_holm is None or self.p_holm < ALPHA

    @property
    def significant(self) -> bool:
        """Better or worse by the CI, and surviving Holm's correction."""
        return self.outcome in (Outcome.BETTER, Outcome.WORSE) and self.survives_holm

    @property
    def label(self) -> str:
        """The verdict column of the report's tables."""
        if self.outcome is Outcome.UNTESTABLE:
            return "single seed: no test"
        if self.outcome is Outcome.TIE:
            return "no significant difference"
        if not self.survives_holm:
            return f"{self.arm} {self.outcome.value} by CI, not after Holm"
        return f"{self.arm} {self.outcome.value} (CI excludes 0)"

    def flipped(self) -> Comparison:
        """The same difference read the other way round: ``baseline − arm``."""
        return replace(self, arm=self.baseline, baseline=self.arm,
                       mean_diff=None if self.mean_diff is None else -self.mean_diff,
                       ci95=None if self.ci95 is None else (-self.ci95[1], -self.ci95[0]))

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``outcome``, ``survives_holm`` and ``significant`` (JSON-ready)."""
        return {**asdict(self), "ci95": None if self.ci95 is None else list(self.ci95),
                "outcome": self.outcome.value, "survives_holm": self.survives_holm, "significant": self.significant}


def difference_text(comparison: Comparison, what: str, digits: int = 4, scale: float = 1.0, unit: str = "") -> str:
    """``{what}: arm − baseline = +0.0123 (95% CI [...], paired t p=..., Wilcoxon p=..., n=8)``.

    Args:
        comparison: the difference.
        what: the quantity's name, starting the sentence.
        digits: decimals of the difference and its CI.
        scale: factor applied to the difference (100 for accuracy in percentage points).
        unit: written after the difference and after the CI (``" pp"``).

    Returns:
        The clause, without a final full stop; a single seed's says that no claim is possible.
    """
    c = comparison
    diff = None if c.mean_diff is None else c.mean_diff * scale
    text = f"{what}: {c.arm} − {c.baseline} = {fmt_signed(diff, digits)}{unit}"
    if c.ci95 is None:
        return text + f" (n={c.n}; one seed, so no confidence interval and no statistical claim)"
    ci = [bound * scale for bound in c.ci95]
    wilcoxon = f", Wilcoxon {fmt_p_inline(c.p_wilcoxon)}" if c.p_wilcoxon is not None else ""
    return text + f" (95% CI {fmt_ci(ci, digits, signed=True)}{unit}, paired t {fmt_p_inline(c.p_t)}{wilcoxon}, n={c.n})"


def held(comparison: Comparison | None) -> Outcome:
    """The outcome a question's verdict counts: better or worse only when the CI excludes 0 *and* the
    difference survives Holm's correction; a missing difference is untestable."""
    if comparison is None or comparison.mean_diff is None:
        return Outcome.UNTESTABLE
    outcome = comparison.outcome
    if outcome in (Outcome.BETTER, Outcome.WORSE) and not comparison.survives_holm:
        return Outcome.TIE
    return outcome


def short_text(c: Comparison | None) -> str:
    """``+0.0123 (CI [+0.0040, +0.0206])`` (a single seed: the difference alone)."""
    if c is None or c.mean_diff is None:
        return "not computed"
    return fmt_signed(c.mean_diff) + ("" if c.ci95 is None else f" (CI {fmt_ci(c.ci95, signed=True)})")


def find(comparisons: Sequence[Comparison], arm: str, metric: str, epoch: int) -> Comparison | None:
    """The comparison of ``arm`` in ``metric`` at ``epoch`` among ``comparisons``, if any."""
    return next((c for c in comparisons if c.arm == arm and c.metric == metric and c.epoch == epoch), None)


def comparisons_of(results: Results) -> tuple[Comparison, ...]:
    """Every pairwise row ``arm − baseline`` of summarized results, as comparisons.

    Raises:
        ValueError: the results were not summarized.
    """
    pairwise = results.extra.get("pairwise")
    if pairwise is None:
        raise ValueError("results are not summarized: call hessian_lr.report.summarize(results) first")
    return tuple(Comparison.from_row(r) for r in pairwise.get("comparisons") or [])


def versus(results: Results, comparisons: Sequence[Comparison], arm: str, other: str, epoch: int,
           metric: str = "val_loss") -> Comparison | None:
    """``arm − other`` at ``epoch``: the pairwise row when ``other`` is the baseline (its Holm p over the
    arms), else computed from the seeds as a single pre-specified comparison."""
    if other == results.extra["pairwise"]["baseline"]:
        return find(comparisons, arm, metric, epoch)
    return Comparison.from_row(paired_rows(results, [(arm, other)], metric, epoch)[0])


def final_comparisons(results: Results, metric: str = "val_loss") -> list[Comparison]:
    """Each arm's difference from the baseline in ``metric`` at the workload's last epoch.

    Args:
        results: one workload's summarized results.
        metric: ``val_loss`` (default), ``test_loss`` or ``test_accuracy``.

    Returns:
        One ``Comparison`` per arm other than the baseline, in the pairwise rows' order.
    """
    epochs = int(results.config["epochs"])
    return [c for c in comparisons_of(results) if c.metric == metric and c.epoch == epochs]
