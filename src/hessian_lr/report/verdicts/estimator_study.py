"""Which curvature estimator? The estimators question across a suite's workloads, and whether an
estimate's fidelity to the exact Hessian diagonal predicts how well it trains.

Built on each workload's ``EstimatorAnswer`` (``hessian-<base>-<estimator>`` against ``hessian-<base>``,
the write-up's grad-diff, and against ``<base>``, each family Holm-corrected on its workload), this
module adds what only the suite can say:

- ``EstimatorCell``: one (workload, base, estimator) — the arm's final validation loss, its two
  paired differences and the estimator's fidelity;
- ``EstimatorTally``: per (base, estimator), how many workloads it beat, tied or lost to grad-diff and
  to the bare base (a difference counts when its 95% CI excludes 0 and it survives Holm's correction,
  as ``held`` rules);
- ``FidelityGroup`` / ``FidelityTraining``: per (workload, base) Spearman's ρ across the estimators
  between fidelity and final validation loss, pooled over workloads (per base, and over all bases)
  as the mean ρ with a two-sided permutation test that permutes the estimators' losses within each
  workload independently — over all bases, one ordering per workload for all its bases, which share
  its fidelity values (``stats.pooled_spearman_test``'s blocks).

Fidelity (:func:`mean_fidelity`) is the mean, over the fidelity study's checkpoints, of Spearman's
rank correlation between the estimate and the exact diagonal over all parameters (``analysis.fidelity``;
the study trains one Adam trajectory and feeds every estimator in shadow, so one value per estimator
and workload serves both bases). An arm whose every seed diverged has no final loss; it ranks last
(loss +inf) in the correlation. A group needs at least 3 estimators with both numbers and neither
side constant.

Texts carry the report's inline markup: ``**bold**`` and ```code```.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hessian_lr.arms.names import REFERENCE_ESTIMATOR
from hessian_lr.report.formatting import fmt_p
from hessian_lr.report.verdicts.comparisons import ALPHA, Comparison, Outcome, held
from hessian_lr.report.verdicts.estimators import QUESTION as ESTIMATORS, EstimatorAnswer
from hessian_lr.report.verdicts.tally import SuiteEvidence, SuiteQuestion, Tally
from hessian_lr.results import Results
from hessian_lr.stats import PooledCorrelation, average_ranks, pooled_spearman_test, spearman

__all__ = ["FIDELITY_DEFINITION", "MIN_GROUP", "mean_fidelity", "EstimatorCell", "EstimatorTally", "FidelityGroup",
           "FidelityTraining", "EstimatorStudy", "estimator_study", "PERMUTATION_SEED", "ACROSS"]

MIN_GROUP = 3  # estimators a (workload, base) needs for a rank correlation
PERMUTATION_SEED = 0  # of the Monte Carlo permutation test, where it cannot be exact
FIDELITY_DEFINITION = ("fidelity = the mean, over the fidelity study's checkpoints, of Spearman's rank correlation "
                       "between the estimate and the exact Hessian diagonal over all parameters")
_OUTCOMES = (Outcome.BETTER, Outcome.TIE, Outcome.WORSE, Outcome.UNTESTABLE)


def mean_fidelity(fidelity: Mapping[str, Any] | None, estimator: str) -> float | None:
    """The estimator's fidelity on one workload (see ``FIDELITY_DEFINITION``).

    Args:
        fidelity: the workload's ``fidelity.json`` (``None``: not measured).
        estimator: the estimator's name.

    Returns:
        The mean of its Spearman values at the checkpoints (missing ones left out); ``None`` when
        it was not measured (skipped, e.g. gauss-newton on a regression workload).
    """
    series = ((fidelity or {}).get("estimators") or {}).get(estimator) or {}
    values = [v for v in series.get("spearman") or [] if v is not None and math.isfinite(v)]
    return statistics.fmean(values) if values else None


@dataclass(frozen=True)
class EstimatorCell:
    """One estimator around one base on one workload. ``vs_reference`` is None for grad-diff itself."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("vs_reference_outcome", "vs_base_outcome")

    workload: str
    base: str
    arm: str
    estimator: str
    final_loss: float | None  # mean over the seeds that did not diverge
    final_ci95: tuple[float, float] | None
    seeds: int
    diverged: int
    vs_reference: Comparison | None
    vs_base: Comparison | None
    fidelity: float | None

    @property
    def vs_reference_outcome(self) -> Outcome | None:
        return None if self.vs_reference is None else held(self.vs_reference)

    @property
    def vs_base_outcome(self) -> Outcome:
        return held(self.vs_base)


@dataclass(frozen=True)
class EstimatorTally:
    """One (base, estimator) across the workloads: how its final loss compared (``held``) with grad-diff's
    and with the bare base's. ``vs_reference`` is empty for grad-diff itself."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("text",)

    base: str
    estimator: str
    arm: str
    vs_reference: dict[str, Outcome]  # workload → outcome
    vs_base: dict[str, Outcome]

    @staticmethod
    def counts(outcomes: Mapping[str, Outcome]) -> dict[str, int]:
        return {o.value: sum(v is o for v in outcomes.values()) for o in _OUTCOMES}

    @property
    def text(self) -> str:
        def phrase(outcomes: Mapping[str, Outcome], other: str) -> str:
            groups = [(o, [w for w, v in outcomes.items() if v is o]) for o in _OUTCOMES]
            words = {Outcome.BETTER: "lower", Outcome.TIE: "within noise", Outcome.WORSE: "higher",
                     Outcome.UNTESTABLE: "untestable"}
            return f"against {other}: " + ", ".join(
                f"{words[o]} on {len(ws)}" + (f" ({', '.join(ws)})" if ws and o is not Outcome.TIE else "")
                for o, ws in groups if ws)

        parts = [] if not self.vs_reference else [phrase(self.vs_reference, "grad-diff")]
        parts.append(phrase(self.vs_base, self.base))
        return f"{self.arm} ({self.estimator}), final validation loss " + "; ".join(parts)


@dataclass(frozen=True)
class FidelityGroup:
    """One (workload, base): each estimator's fidelity beside its arm's final loss, and their rank
    correlation ``rho`` (None when fewer than ``MIN_GROUP`` estimators have both, or a side is constant)."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("loss_rank",)

    workload: str
    base: str
    estimators: tuple[str, ...]
    fidelity: tuple[float, ...]
    final_loss: tuple[float | None, ...]  # None: every seed diverged (ranked last)
    left_out: tuple[str, ...]  # trained around the base, but no fidelity measured
    rho: float | None

    @property
    def losses_ranked(self) -> tuple[float, ...]:
        """The losses as ranked: a diverged arm (None) as +inf."""
        return tuple(math.inf if v is None else v for v in self.final_loss)

    @property
    def loss_rank(self) -> tuple[float, ...]:
        """Each estimator's final loss as its rank among the group's, scaled to [0, 1] (0: the lowest;
        ties share their mean rank), so that workloads share one axis."""
        if len(self.final_loss) < 2:
            return tuple(0.0 for _ in self.final_loss)
        return tuple((r - 1) / (len(self.final_loss) - 1) for r in average_ranks(self.losses_ranked))


@dataclass(frozen=True)
class FidelityTraining:
    """Does fidelity predict training, pooled over ``groups`` (one base's workloads, or all groups)?"""

    EXPORTED: ClassVar[tuple[str, ...]] = ("answer", "text")

    scope: str  # a base's name, or "all" for every (workload, base)
    groups: tuple[FidelityGroup, ...]  # those with a rho
    test: PooledCorrelation | None  # None: no group had a rho

    @property
    def answer(self) -> str:
        """``yes`` (significantly negative: more faithful, lower loss), ``reversed`` (significantly
        positive), ``no`` (the test does not reject), ``not tested`` (no group)."""
        if self.test is None:
            return "not tested"
        if self.test.p_value >= ALPHA:
            return "no"
        return "yes" if self.test.statistic < 0 else "reversed"

    @property
    def text(self) -> str:
        where = "all bases" if self.scope == "all" else f"around {self.scope}"
        if self.test is None:
            return (f"Does fidelity predict training ({where})? **Not tested**: no (workload, base) had "
                    f"{MIN_GROUP} estimators with both a fidelity and a final loss.")
        t = self.test
        together = (" (one ordering for all bases of a workload: they share its fidelity)"
                    if len({g.base for g in self.groups}) > 1 else "")
        method = (f"exact over all {t.permutations:,} permutations" if t.method == "exact" else
                  f"Monte Carlo, {t.permutations:,} permutations, seed {t.seed}")
        verdict = {"yes": "**yes**: more faithful estimators reached lower final validation loss",
                   "reversed": "**the reverse**: more faithful estimators reached higher final validation loss",
                   "no": "**no evidence** that fidelity predicts the final validation loss"}[self.answer]
        return (f"Does fidelity predict training ({where})? Mean Spearman ρ between fidelity and final validation "
                f"loss over {len(self.groups)} (workload, base) group{'' if len(self.groups) == 1 else 's'}: "
                f"{t.statistic:+.3f} (negative: more faithful, lower loss); two-sided permutation test, losses "
                f"permuted within each workload{together}, p = {fmt_p(t.p_value)} ({method}) — {verdict}.")


@dataclass(frozen=True)
class EstimatorStudy:
    """The estimators question over a suite (``estimator_study``)."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("texts",)

    workloads: tuple[str, ...]
    bases: tuple[str, ...]
    cells: tuple[EstimatorCell, ...]
    tallies: tuple[EstimatorTally, ...]
    groups: tuple[FidelityGroup, ...]
    pooled: tuple[FidelityTraining, ...]  # per base, then "all" when there are several bases
    not_measured: tuple[str, ...]  # workloads without a fidelity study

    def cell(self, workload: str, base: str, estimator: str) -> EstimatorCell | None:
        return next((c for c in self.cells if (c.workload, c.base, c.estimator) == (workload, base, estimator)), None)

    @property
    def texts(self) -> list[str]:
        """The answer's paragraphs: per base the tallies against grad-diff, then fidelity vs training."""
        out = []
        for base in self.bases:
            mine = [t for t in self.tallies if t.base == base]
            beaten = [t.estimator for t in mine if t.vs_reference and
                      sum(o is Outcome.BETTER for o in t.vs_reference.values()) >= 2]
            workloads = len({w for t in mine for w in t.vs_base})
            head = (f"Estimators around {base} over {workloads} workload{'' if workloads == 1 else 's'} (a difference "
                    f"counts when its paired 95% CI excludes 0 and it survives Holm's correction on its workload): ")
            tail = (f" Lower than grad-diff on at least 2 workloads: {', '.join(beaten)}." if beaten else
                    " No estimator reached a lower final loss than grad-diff on 2 or more workloads.")
            out.append(head + "; ".join(t.text for t in mine) + "." + tail)
        out += [p.text for p in self.pooled]
        if self.not_measured:
            out.append(f"Fidelity was not measured on {', '.join(self.not_measured)}: those workloads add no group.")
        return out


def _cells(answer: EstimatorAnswer, results: Results, fidelity: Mapping[str, Any] | None) -> list[EstimatorCell]:
    cells = []
    for arm, estimator in ((answer.reference, REFERENCE_ESTIMATOR), *answer.estimators.items()):
        s = results.optimizers[arm].summary
        ci = s.get("val_loss_ci95")
        cells.append(EstimatorCell(
            workload=answer.workload, base=answer.base, arm=arm, estimator=estimator, final_loss=s.get("val_loss_mean"),
            final_ci95=None if ci is None else (ci[0], ci[1]), seeds=int(s.get("n_seeds") or 0),
            diverged=int(s.get("n_diverged") or 0),
            vs_reference=None if arm == answer.reference else answer.against_reference(arm),
            vs_base=answer.against_base(arm), fidelity=mean_fidelity(fidelity, estimator)))
    return cells


def _group(cells: Sequence[EstimatorCell]) -> FidelityGroup:
    measured = [c for c in cells if c.fidelity is not None]
    group = FidelityGroup(workload=cells[0].workload, base=cells[0].base,
                          estimators=tuple(c.estimator for c in measured),
                          fidelity=tuple(c.fidelity for c in measured),
                          final_loss=tuple(c.final_loss for c in measured),
                          left_out=tuple(c.estimator for c in cells if c.fidelity is None), rho=None)
    if len(measured) < MIN_GROUP:
        return group
    return FidelityGroup(**{**group.__dict__, "rho": spearman(group.fidelity, group.losses_ranked)})


def _pooled(scope: str, groups: Sequence[FidelityGroup], seed: int) -> FidelityTraining:
    """The pooled test over ``groups``. A workload's groups around several bases share its fidelity
    values, so they are permuted together (one block) when they rank the same estimators."""
    usable = tuple(g for g in groups if g.rho is not None)
    if not usable:
        return FidelityTraining(scope=scope, groups=(), test=None)
    estimators = {w: {g.estimators for g in usable if g.workload == w} for w in {g.workload for g in usable}}
    blocks = [g.workload if len(estimators[g.workload]) == 1 else f"{g.workload}/{g.base}" for g in usable]
    test = pooled_spearman_test([(g.fidelity, g.losses_ranked) for g in usable], blocks=blocks, seed=seed)
    return FidelityTraining(scope=scope, groups=usable, test=test)


def estimator_study(answers: Mapping[str, Sequence[EstimatorAnswer]], results: Mapping[str, Results],
                    fidelity: Mapping[str, Mapping[str, Any] | None],
                    seed: int = PERMUTATION_SEED) -> EstimatorStudy | None:
    """The estimators question across workloads.

    Args:
        answers: workload → its ``EstimatorAnswer`` records (``Questions.estimators``), one per base
            that ran ``hessian-<base>`` with at least one other estimator.
        results: workload → its summarized results.
        fidelity: workload → its ``fidelity.json`` (``None`` or missing: not measured).
        seed: the Monte Carlo seed of the permutation tests, where they cannot be exact.

    Returns:
        The ``EstimatorStudy``; ``None`` when no workload ran estimator arms.
    """
    if not any(answers.values()):
        return None
    cells: list[EstimatorCell] = []
    groups: list[FidelityGroup] = []
    for workload, records in answers.items():
        for answer in records:
            mine = _cells(answer, results[workload], fidelity.get(workload))
            cells += mine
            groups.append(_group(mine))
    bases = tuple(dict.fromkeys(c.base for c in cells))
    tallies = []
    for base in bases:
        for estimator in dict.fromkeys(c.estimator for c in cells if c.base == base):
            mine = [c for c in cells if (c.base, c.estimator) == (base, estimator)]
            tallies.append(EstimatorTally(
                base=base, estimator=estimator, arm=mine[0].arm,
                vs_reference={c.workload: c.vs_reference_outcome for c in mine if c.vs_reference is not None},
                vs_base={c.workload: c.vs_base_outcome for c in mine}))
    pooled = [_pooled(base, [g for g in groups if g.base == base], seed) for base in bases]
    if len(bases) > 1:
        pooled.append(_pooled("all", groups, seed))
    workloads = tuple(w for w, records in answers.items() if records)
    return EstimatorStudy(workloads=workloads, bases=bases, cells=tuple(cells), tallies=tuple(tallies),
                          groups=tuple(groups), pooled=tuple(pooled),
                          not_measured=tuple(w for w in workloads if not (fidelity.get(w) or {}).get("estimators")))


def _judge(evidence: SuiteEvidence) -> EstimatorStudy | None:
    return estimator_study({w: q.of(ESTIMATORS.key) for w, q in evidence.questions.items()}, evidence.results,
                           evidence.fidelity)


def _write(record: EstimatorStudy | None, evidence: SuiteEvidence, tally: Tally) -> None:
    """The tallies against grad-diff and the fidelity–training answer (the estimators question already
    wrote and filed each workload's answer)."""
    if record is None:
        return
    tally.overall += record.texts
    for pooled in record.pooled:
        where = "over all bases" if pooled.scope == "all" else f"around {pooled.scope}"
        claim = f"that an estimate's fidelity predicts its final validation loss {where}"
        if pooled.answer in ("yes", "reversed"):
            direction = "lower" if pooled.answer == "yes" else "higher"
            tally.supported.append(f"more faithful estimators reach {direction} final validation loss {where} "
                                   f"(mean ρ {pooled.test.statistic:+.3f}, p = {fmt_p(pooled.test.p_value)})")
        elif pooled.answer == "no":
            tally.not_supported.append(f"{claim} (mean ρ {pooled.test.statistic:+.3f}, p = "
                                       f"{fmt_p(pooled.test.p_value)})")
        else:
            tally.not_tested.append(f"{claim} (no workload had {MIN_GROUP} estimators with a fidelity and a loss)")


ACROSS = SuiteQuestion(key="estimator_study", judge=_judge, write=_write)
