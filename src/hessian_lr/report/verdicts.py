"""Every verdict of a report, computed as data: which differences are real, which of the original
write-up's claims hold, what the conclusion says. ``document.py`` (and through it ``report.md`` and
``report.html``) only lays these records out; no comparative sentence is written anywhere else.

Per workload: ``workload_verdicts(results)`` judges one summarized ``Results`` (see
``summary.summarize``) and returns a ``WorkloadVerdicts``:

- ``comparisons``: every paired difference ``arm − baseline`` of ``results.extra["pairwise"]`` as a
  ``Comparison`` (its ``outcome``: better / worse / tie / untestable, and whether it survives Holm);
- ``equal_lr``: the equal-lr ablation's differences, judged the same way (on their CIs alone);
- ``reproduction``: the original write-up's claims as ``Claim`` records (supported, contradicted,
  not supported, untestable, or only a single-seed sign), hessian-adam − adam whichever arm is the
  baseline;
- ``conclusion``: per arm the ``Finding`` sentences and the lists of what is and is not supported;
- ``questions``: the write-up's two questions (``Questions``): would better curvature estimators
  (``EstimatorAnswer``: ``hessian-<base>-<estimator>`` against grad-diff and against the base, beside
  ``analysis.fidelity``'s measure) or other base optimizers (``WrapAnswer``: ``hessian-<base>`` against
  ``<base>``) change the answer; what the run lacks to test them is said so;
- ``tuning_luck``: with repeated studies, each arm's study-to-study spread (``TuningLuck``).

Across workloads (the suite report): ``win_tie_loss(results_by_workload)`` counts, per arm, the
workloads where its paired 95% CI against the baseline lies below / contains / lies above zero,
``claims_across_workloads(verdicts_by_workload)`` tallies each claim's status over the workloads,
``profile_standings(profiles)`` ranks the arms by their performance-profile score (AlgoPerf, Dahl et
al. 2023, arXiv:2306.07179), and ``suite_verdicts`` puts it all together with the generated
``SuiteConclusion`` (per workload, overall, supported / not supported / not tested).
``verdict_data`` turns any record into JSON for suite.json.

The baseline is the first arm named (``summary.baseline_arm``).

The rule throughout: a difference is real when the two-sided 95% t interval of the paired (same
seed) difference excludes 0; a claim against the baseline must also survive Holm's correction over
the arms compared at that epoch (Holm 1979). A single seed gives no interval, so no claim.

Texts carry the report's inline markup: ``**bold**`` and ```code```.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from enum import Enum
from typing import Any, ClassVar

from hessian_lr.report.budget import TuningSpread, spreads_from_results
from hessian_lr.report.formatting import fmt, fmt_ci, fmt_p, fmt_p_inline, fmt_signed
from hessian_lr.report.profiles import PerformanceProfiles
from hessian_lr.report.spaces import arm_space, dimension_text, lr_arms, tunes_lr
from hessian_lr.report.summary import baseline_arm, early_epoch, paired_rows, seed_runs
from hessian_lr.results import Results

__all__ = ["ALPHA", "ORIGINAL_BEST_LR", "ORIGINAL_CLAIM", "Outcome", "ClaimStatus", "Comparison", "Claim",
           "Reproduction", "Finding", "ArmConclusion", "Conclusion", "WorkloadVerdicts", "WinTieLossCell",
           "WinTieLossCount", "WinTieLoss", "ClaimAcrossWorkloads", "ProfileStanding", "direction", "difference_text",
           "judge_claim", "workload_verdicts", "final_comparisons", "win_tie_loss", "claims_across_workloads",
           "profile_standings", "NORMALISES", "REFERENCE_ESTIMATOR", "Answer", "Effect", "held", "EstimatorFidelity",
           "fidelity_records", "estimator_arms", "EstimatorAnswer", "WrapAnswer", "Questions", "TuningLuck",
           "SuiteConclusion", "SuiteVerdicts", "suite_verdicts", "verdict_data"]

ALPHA = 0.05
# The original write-up's tuned learning rates, shown beside ours (never used to set anything).
ORIGINAL_BEST_LR = {"adam": 0.00524, "hessian-adam": 0.00271}
ORIGINAL_CLAIM = "HessianLR(Adam) is faster early, Adam ends slightly lower"
HIGHER_IS_BETTER = {"val_loss": False, "test_loss": False, "test_accuracy": True}


class Outcome(str, Enum):
    """How a paired difference ``arm − baseline`` came out, seen from the arm."""

    BETTER = "better"  # the 95% CI lies entirely on the arm's good side of 0
    WORSE = "worse"  # entirely on its bad side
    TIE = "tie"  # the CI contains 0: within seed noise
    UNTESTABLE = "untestable"  # no CI (fewer than two paired seeds)


class ClaimStatus(str, Enum):
    """What the data say about a directional claim."""

    SUPPORTED = "supported"  # the CI lies on the claimed side of 0
    CONTRADICTED = "contradicted"  # it lies on the other side
    NOT_SUPPORTED = "not supported"  # it contains 0
    UNTESTABLE = "untestable"  # no difference at all (no row, or every pair diverged)
    SINGLE_SEED_SIGN = "single-seed sign"  # one seed: only the sign of the difference is known


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


# -- claims -----------------------------------------------------------------------------------------

def judge_claim(evidence: Comparison | None, claimed_direction: int) -> tuple[ClaimStatus, bool | None]:
    """Judge "the CI of ``arm − baseline`` lies on the ``claimed_direction`` side of 0".

    Args:
        evidence: the difference (None: the quantity was not compared).
        claimed_direction: -1 (the arm is claimed lower) or +1 (higher).

    Returns:
        ``(status, sign_matches)``; ``sign_matches`` says, for a single seed, whether the one
        difference has the claimed sign (None otherwise).
    """
    if evidence is None or evidence.mean_diff is None:
        return ClaimStatus.UNTESTABLE, None
    d = evidence.direction
    if d is None:
        return ClaimStatus.SINGLE_SEED_SIGN, evidence.mean_diff * claimed_direction > 0
    if d == claimed_direction:
        return ClaimStatus.SUPPORTED, None
    return (ClaimStatus.CONTRADICTED, None) if d == -claimed_direction else (ClaimStatus.NOT_SUPPORTED, None)


@dataclass(frozen=True)
class Claim:
    """A directional claim about ``evidence`` (``arm − baseline``) and what the data say about it."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("verdict_text", "text")

    id: str  # stable across workloads: "original/faster-early"
    statement: str  # the claim as the write-up put it
    claimed_direction: int  # the sign the claim predicts for arm − baseline
    status: ClaimStatus
    evidence: Comparison | None
    evidence_text: str  # difference_text of the evidence ("" without evidence)
    sign_matches: bool | None = None  # single seed only: the difference has the claimed sign

    @property
    def verdict_text(self) -> str:
        """The status in words (``supported``, ``not supported (within seed noise)``, ...)."""
        if self.status is ClaimStatus.SINGLE_SEED_SIGN:
            return ("matches in sign (single seed: not a statistical claim)" if self.sign_matches else
                    "does not match in sign (single seed)")
        if self.status is ClaimStatus.NOT_SUPPORTED:
            return "not supported (within seed noise)"
        return self.status.value

    @property
    def text(self) -> str:
        """``statement — evidence: **verdict**.``"""
        evidence = f" — {self.evidence_text}" if self.evidence_text else ""
        return f"{self.statement}{evidence}: **{self.verdict_text}**."


def _claim(claim_id: str, statement: str, evidence: Comparison | None, claimed_direction: int,
           what: str) -> Claim:
    status, sign = judge_claim(evidence, claimed_direction)
    return Claim(id=claim_id, statement=statement, claimed_direction=claimed_direction, status=status,
                 evidence=evidence, evidence_text="" if evidence is None else difference_text(evidence, what),
                 sign_matches=sign)


def _relation(a: float, b: float) -> str:
    return "lower than" if a < b else "higher than" if a > b else "equal to"


@dataclass(frozen=True)
class Reproduction:
    """The original write-up's tuned lrs beside ours, and its claims judged on these data."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("intro",)

    claim: str
    original_lr: dict[str, float]
    tuned_lr: dict[str, float | None]
    claims: tuple[Claim, ...]

    @property
    def intro(self) -> str:
        (o_adam, o_hess), (adam, hess) = ((lrs["adam"], lrs["hessian-adam"]) for lrs in (self.original_lr, self.tuned_lr))
        original = f"in the write-up it was {_relation(o_hess, o_adam).split()[0]}"
        if adam is None or hess is None:
            untuned = "adam" if adam is None else "hessian-adam"
            here = f"here the lr of {untuned} was not tuned, so the lrs cannot be set side by side"
        else:
            here = (f"here they tuned to {adam:.5f} and {hess:.5f} (hessian-adam's lr is {_relation(hess, adam)} "
                    f"adam's here; {original})")
        return (f"The original write-up tuned adam to lr {o_adam:.5f} and hessian-adam to {o_hess:.5f}; {here}. "
                f"Its claim: {self.claim}.")


def _versus(results: Results, comparisons: Sequence[Comparison], arm: str, other: str, epoch: int,
            metric: str = "val_loss") -> Comparison | None:
    """``arm − other`` at ``epoch``: the pairwise row when ``other`` is the baseline (its Holm p over the
    arms), else computed from the seeds as a single pre-specified comparison."""
    if other == results.extra["pairwise"]["baseline"]:
        return _find(comparisons, arm, metric, epoch)
    return Comparison.from_row(paired_rows(results, [(arm, other)], metric, epoch)[0])


def _reproduction(results: Results, comparisons: Sequence[Comparison]) -> Reproduction | None:
    """The write-up compared hessian-adam with adam: any run with both tests it, whichever arm is the baseline."""
    if not {"adam", "hessian-adam"} <= set(results.optimizers):
        return None
    epochs = int(results.config["epochs"])
    early = early_epoch(epochs)
    early_row, end_row = (_versus(results, comparisons, "hessian-adam", "adam", e) for e in (early, epochs))
    if early_row is None or end_row is None:
        return None
    claims = (_claim("original/faster-early", "Faster early", early_row, -1, f"validation loss at epoch {early}"),
              _claim("original/adam-lower-at-end", "Adam slightly lower at the end", end_row, +1,
                     f"validation loss at epoch {epochs}"))
    return Reproduction(claim=ORIGINAL_CLAIM, original_lr=dict(ORIGINAL_BEST_LR),
                        tuned_lr={a: results.optimizers[a].best_lr if tunes_lr(arm_space(results, a)) else None
                                  for a in ("adam", "hessian-adam")}, claims=claims)


# -- conclusion -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One sentence of the conclusion about an arm against the baseline.

    ``supported``: the claim it adds to "statistically supported"; ``not_supported``: what it adds
    to "not supported by these data" (either may be None).
    """

    kind: str  # "difference", "time_to_target" or "equal_lr"
    text: str
    supported: str | None = None
    not_supported: str | None = None
    evidence: tuple[Comparison, ...] = ()


@dataclass(frozen=True)
class ArmConclusion:
    """The conclusion's paragraph on one arm: its findings against the baseline, in order."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("text",)

    arm: str
    baseline: str
    findings: tuple[Finding, ...]

    @property
    def text(self) -> str:
        return f"**{self.arm} vs {self.baseline}.** " + " ".join(f.text for f in self.findings)


@dataclass(frozen=True)
class Conclusion:
    """Per-arm paragraphs, then ``closing`` paragraphs (what is and is not supported, caveats)."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("supported", "not_supported")

    baseline: str
    arms: tuple[ArmConclusion, ...]
    closing: tuple[str, ...]

    @property
    def supported(self) -> list[str]:
        """Every statistically supported claim of the findings, in order."""
        return [f.supported for a in self.arms for f in a.findings if f.supported]

    @property
    def not_supported(self) -> list[str]:
        """Everything the findings list as not supported by these data, in order."""
        return [f.not_supported for a in self.arms for f in a.findings if f.not_supported]


def _difference_finding(c: Comparison, what: str, n_others: int) -> Finding:
    accuracy = c.metric == "test_accuracy"
    digits, scale, unit = (2, 100.0, " pp") if accuracy else (4, 1.0, "")
    sentence = difference_text(c, what.capitalize(), digits, scale, unit)
    evidence = (c,)
    if c.outcome is Outcome.UNTESTABLE:
        return Finding("difference", sentence + ".", evidence=evidence)
    if c.outcome is Outcome.TIE:
        return Finding("difference", sentence + " — within seed noise.",
                       not_supported=f"a difference between {c.arm} and {c.baseline} in {what}", evidence=evidence)
    claim = f"{c.arm} {'beats' if c.outcome is Outcome.BETTER else 'is worse than'} {c.baseline} in {what}"
    if not c.survives_holm:
        return Finding("difference", sentence + f" — {claim} by its CI alone; not after Holm's correction over the "
                       f"{n_others} arms (p={fmt_p(c.p_holm)}).",
                       not_supported=f"{claim} (its CI excludes 0, but not after Holm's correction, p={fmt_p(c.p_holm)})",
                       evidence=evidence)
    return Finding("difference", sentence + f" — **{claim}**.", supported=claim, evidence=evidence)


def _time_to_target_finding(results: Results, arm: str, base: str) -> Finding | None:
    hits, base_hits = (results.optimizers[a].summary.get("time_to_target_epochs") or [] for a in (arm, base))
    if not hits or (results.extra.get("target") or {}).get("value") is None:
        return None
    reached, base_reached = (sum(t is not None for t in times) for times in (hits, base_hits))
    return Finding("time_to_target", f"Time to target: {arm} reached it in {reached} of {len(hits)} seeds, "
                                     f"{base} in {base_reached} of {len(base_hits)}.")


def _equal_lr_finding(equal_lr: Sequence[Comparison], arm: str, base: str, epoch: int, when: str) -> Finding | None:
    """``arm − base`` trained at the same lr, at base's tuned lr and at arm's (read from ``base − arm``)."""
    at_base = next((c for c in equal_lr if c.arm == arm and c.baseline == base and c.epoch == epoch), None)
    at_arm = next((c for c in equal_lr if c.arm == base and c.baseline == arm and c.epoch == epoch), None)
    sides = [(f"{lr_of}'s lr", c) for lr_of, c in ((base, at_base), (arm, None if at_arm is None else at_arm.flipped()))
             if c is not None and c.mean_diff is not None]
    if not sides:
        return None
    parts = [f"at {where} {fmt_signed(c.mean_diff)} (CI {fmt_ci(c.ci95, signed=True)})" for where, c in sides]
    dirs = [c.direction for _, c in sides]
    what = f"{when} (epoch {epoch}) validation loss at equal lr"
    claim = not_shown = None
    if any(d is None for d in dirs):
        verdict = "single seed: no statistical claim"
    elif all(d == -1 for d in dirs):
        verdict = f"**{arm} is better at both lrs**: not just the effect of a different lr"
        claim = f"{arm} beats {base} in {what}"
    elif all(d == 1 for d in dirs):
        verdict = f"**{arm} is worse at both lrs**"
        claim = f"{arm} is worse than {base} in {what}"
    elif -1 in dirs and 1 in dirs:
        verdict = "better at one lr, worse at the other: the effect depends on the lr"
        not_shown = f"a consistent equal-lr effect of {arm} in {when} validation loss"
    else:
        significant = [f"{'better' if d == -1 else 'worse'} at {where}" for (where, _), d in zip(sides, dirs) if d]
        verdict = ("significantly " + " and ".join(significant) + ", within seed noise at the other lr") if significant \
            else "within seed noise at both lrs"
        if 1 in dirs:
            claim = f"{arm} is worse than {base} in {when} (epoch {epoch}) validation loss at {sides[dirs.index(1)][0]}"
        if -1 not in dirs:
            not_shown = f"an advantage of {arm} over {base} in {what}"
    text = (f"Equal-lr ablation, {when} (epoch {epoch}) validation loss, {arm} − {base}: " + "; ".join(parts)
            + f" — {verdict}.")
    return Finding("equal_lr", text, supported=claim, not_supported=not_shown, evidence=tuple(c for _, c in sides))


def _conclusion(results: Results, comparisons: Sequence[Comparison], equal_lr: Sequence[Comparison],
                seeds: int) -> Conclusion:
    arms = list(results.optimizers)
    base = baseline_arm(arms)
    if len(arms) == 1:
        return Conclusion(baseline=base, arms=(), closing=("Only one optimizer was run; there is nothing to compare.",))
    epochs = int(results.config["epochs"])
    early = early_epoch(epochs)
    quantities = (("val_loss", early, f"early (epoch {early}) validation loss"),
                  ("val_loss", epochs, f"final (epoch {epochs}) validation loss"),
                  ("test_accuracy", epochs, "test accuracy"))
    per_arm = []
    for arm in arms:
        if arm == base:
            continue
        findings = [_difference_finding(c, what, len(arms) - 1) for metric, epoch, what in quantities
                    if (c := _find(comparisons, arm, metric, epoch)) is not None]
        findings.append(_time_to_target_finding(results, arm, base))
        if equal_lr:
            findings += [_equal_lr_finding(equal_lr, arm, base, epoch, "early" if epoch < epochs else "final")
                         for epoch in sorted({early, epochs})]
        per_arm.append(ArmConclusion(arm=arm, baseline=base, findings=tuple(f for f in findings if f is not None)))
    conclusion = Conclusion(baseline=base, arms=tuple(per_arm), closing=())
    if seeds > 1:
        closing = (
            "Statistically supported (95% CI of the paired difference excludes 0, and against "
            f"{base} Holm-adjusted p < {ALPHA}): " + ("; ".join(conclusion.supported) or "nothing") + ".",
            "Not supported by these data: " + ("; ".join(conclusion.not_supported) or "nothing") + ".",
            f"CIs are per comparison (not adjusted); with {len(arms) - 1} arm(s) against {base}, claims against the "
            "baseline also need Holm's correction over the arms at that epoch. The equal-lr ablation is judged on "
            "its CIs alone.")
    else:
        closing = ("These are single training runs at one seed per optimizer: seed-to-seed noise is not measured, so "
                   "no difference above is statistically supported. `hessian-lr compare --seeds K` repeats the finals "
                   "with K seeds and reports confidence intervals.",)
    return replace(conclusion, closing=closing)


# -- one workload -----------------------------------------------------------------------------------

def _find(comparisons: Sequence[Comparison], arm: str, metric: str, epoch: int) -> Comparison | None:
    return next((c for c in comparisons if c.arm == arm and c.metric == metric and c.epoch == epoch), None)


def _comparisons(results: Results) -> tuple[Comparison, ...]:
    pairwise = results.extra.get("pairwise")
    if pairwise is None:
        raise ValueError("results are not summarized: call hessian_lr.report.summarize(results) first")
    return tuple(Comparison.from_row(r) for r in pairwise.get("comparisons") or [])


def _lr_order(results: Results) -> str | None:
    """``Ordered by tuned learning rate (lowest first): a (0.00100) < b (0.00200) = c (0.00200).``, then
    the arms whose space does not tune the lr (``prodigy: lr fixed at 1.0, not tuned``)."""
    if len(results.optimizers) < 2:
        return None
    tuned = lr_arms(results)
    lrs = {arm: results.optimizers[arm].best_lr for arm in tuned if results.optimizers[arm].best_lr is not None}
    untuned = [arm for arm in results.optimizers if arm not in lrs]
    text = None
    if len(lrs) >= 2:
        ordered = sorted(lrs, key=lrs.__getitem__)
        text = f"{ordered[0]} ({lrs[ordered[0]]:.5f})"
        for previous, arm in zip(ordered, ordered[1:]):
            text += f" {'=' if lrs[arm] == lrs[previous] else '<'} {arm} ({lrs[arm]:.5f})"
        text = f"Ordered by tuned learning rate (lowest first): {text}."
    if untuned:
        notes = []
        for arm in untuned:
            spec = arm_space(results, arm).get("lr")
            notes.append(f"{arm}: lr {dimension_text(spec)}, not tuned" if spec else f"{arm}: no lr in its space")
        text = ((text + " ") if text else "") + "Not tuning the lr: " + "; ".join(notes) + "."
    return text


# -- the write-up's two questions -------------------------------------------------------------------
#
# 1. Would better curvature estimators change the answer? Each ``hessian-<base>-<estimator>`` arm
#    is set against ``hessian-<base>`` (the write-up's grad-diff estimator) and against ``<base>``,
#    beside ``analysis.fidelity``'s measure of how well each estimator tracks the exact diagonal.
# 2. Would other base optimizers? ``hessian-<base>`` against ``<base>`` for every base that ran
#    wrapped and plain: does wrapping help a base without Adam's own per-coordinate normalisation?
#
# In both, a difference counts only when its paired 95% CI excludes 0 and it survives Holm's
# correction over the comparisons of that question on that workload (Holm 1979).

WRAPPED_PREFIX = "hessian-"
REFERENCE_ESTIMATOR = "grad-diff"  # the write-up's estimator: what ``hessian-<base>`` uses
# Whether a base optimizer divides each coordinate by a running scale of its own (as Adam does),
# which partly undoes the wrapper's rescaling; bases not listed are not classified.
NORMALISES = {"adam": True, "adamw": True, "sgd": False}


class Answer(str, Enum):
    """The answer to one of the write-up's questions on one workload."""

    YES = "yes"
    NO = "no"
    UNTESTABLE = "untestable"  # the arms ran, but a difference had no CI (one seed)
    NOT_TESTED = "not tested"  # the arms the question needs did not run


class Effect(str, Enum):
    """What wrapping a base optimizer did, from its early and final validation-loss differences."""

    HELPS = "helps"  # lower final loss, not higher early
    FASTER_EARLY = "faster early only"  # lower early, the same at the end
    NO_DIFFERENCE = "no difference"
    SLOWER_EARLY = "slower early only"
    HURTS = "hurts"  # higher final loss, not lower early
    MIXED = "mixed"  # lower at one point, higher at the other
    UNTESTABLE = "untestable"

    @property
    def helps(self) -> bool:
        return self in (Effect.HELPS, Effect.FASTER_EARLY)


_RANK = {Outcome.WORSE: 0, Outcome.TIE: 1, Outcome.BETTER: 2}


def held(comparison: Comparison | None) -> Outcome:
    """The outcome a question's verdict counts: better or worse only when the CI excludes 0 *and* the
    difference survives Holm's correction; a missing difference is untestable."""
    if comparison is None or comparison.mean_diff is None:
        return Outcome.UNTESTABLE
    outcome = comparison.outcome
    if outcome in (Outcome.BETTER, Outcome.WORSE) and not comparison.survives_holm:
        return Outcome.TIE
    return outcome


def _short(c: Comparison | None) -> str:
    """``+0.0123 (CI [+0.0040, +0.0206])`` (a single seed: the difference alone)."""
    if c is None or c.mean_diff is None:
        return "not computed"
    return fmt_signed(c.mean_diff) + ("" if c.ci95 is None else f" (CI {fmt_ci(c.ci95, signed=True)})")


def _word(c: Comparison | None) -> str:
    outcome = held(c)
    if outcome is Outcome.UNTESTABLE:
        return "single seed: no test" if c is not None and c.mean_diff is not None else "not computed"
    if outcome is Outcome.TIE:
        return "within noise" + ("" if c.outcome is Outcome.TIE else " after Holm's correction")
    return outcome.value


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def _counted(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class EstimatorFidelity:
    """One estimator's agreement with the exact Hessian diagonal (``analysis.fidelity``) at the first
    and the last checkpoint: Spearman's rank correlation and the Pearson correlation of the log
    magnitudes, over all parameters."""

    estimator: str
    steps: tuple[int, int]
    spearman: tuple[float | None, float | None]
    log_pearson: tuple[float | None, float | None]


def fidelity_records(fidelity: Mapping[str, Any] | None) -> tuple[EstimatorFidelity, ...]:
    """The estimators of a ``fidelity.json`` (``run_fidelity``'s result; references left out).

    Args:
        fidelity: the dict, or ``None`` / another shape (then there are none).

    Returns:
        One record per estimator, in the file's order.
    """
    if not isinstance(fidelity, Mapping) or not fidelity.get("checkpoints") or "estimators" not in fidelity:
        return ()
    steps = list(fidelity["checkpoints"])

    def ends(values: Sequence[float | None] | None) -> tuple[float | None, float | None]:
        values = list(values or [])
        return (values[0], values[-1]) if values else (None, None)

    return tuple(EstimatorFidelity(str(name), (int(steps[0]), int(steps[-1])), ends(series.get("spearman")),
                                   ends(series.get("log_pearson")))
                 for name, series in fidelity["estimators"].items())


def _fidelity_text(records: Sequence[EstimatorFidelity]) -> str:
    """``at step 700, Spearman with the exact diagonal: grad-diff 0.985, secant 0.902 (most faithful: grad-diff)``."""
    known = [r for r in records if r.spearman[1] is not None]
    if not known:
        return "fidelity was not measured on this workload"
    best = max(known, key=lambda r: r.spearman[1])
    values = ", ".join(f"{r.estimator} {r.spearman[1]:.3f}" for r in known)
    return f"at step {known[0].steps[1]}, Spearman with the exact diagonal: {values} (most faithful: {best.estimator})"


def estimator_arms(arms: Sequence[str], base: str) -> dict[str, str]:
    """``arm → estimator`` for the ``hessian-<base>-<estimator>`` arms among ``arms``."""
    prefix = f"{WRAPPED_PREFIX}{base}-"
    return {arm: arm[len(prefix):] for arm in arms if arm.startswith(prefix) and len(arm) > len(prefix)}


@dataclass(frozen=True)
class EstimatorAnswer:
    """Would a better curvature estimator change the answer? One workload, one base optimizer.

    ``reference`` is ``hessian-<base>`` (grad-diff); ``estimators`` maps each
    ``hessian-<base>-<estimator>`` arm to its estimator. ``vs_base``: the reference's and each
    estimator arm's final validation loss − the base's (Holm over them); ``vs_reference``: each
    estimator arm's − the reference's (Holm over the estimator arms). The answer is yes when an
    estimator arm does better against the base than grad-diff does (better where grad-diff ties
    or loses, or a tie where it loses).
    """

    EXPORTED: ClassVar[tuple[str, ...]] = ("answer", "changed_by", "better_than_reference", "worse_than_reference",
                                           "more_faithful", "fidelity_only", "text")

    workload: str
    base: str
    reference: str
    estimators: dict[str, str]
    vs_base: tuple[Comparison, ...]
    vs_reference: tuple[Comparison, ...]
    fidelity: tuple[EstimatorFidelity, ...] = ()

    def against_base(self, arm: str) -> Comparison | None:
        return next((c for c in self.vs_base if c.arm == arm), None)

    def against_reference(self, arm: str) -> Comparison | None:
        return next((c for c in self.vs_reference if c.arm == arm), None)

    @property
    def answer(self) -> Answer:
        if any(held(c) is Outcome.UNTESTABLE for c in self.vs_base):
            return Answer.UNTESTABLE
        return Answer.YES if self.changed_by else Answer.NO

    @property
    def changed_by(self) -> tuple[str, ...]:
        """The estimator arms whose verdict against the base ranks above grad-diff's."""
        reference = held(self.against_base(self.reference))
        if reference is Outcome.UNTESTABLE:
            return ()
        return tuple(arm for arm in self.estimators if (o := held(self.against_base(arm))) is not Outcome.UNTESTABLE
                     and _RANK[o] > _RANK[reference])

    @property
    def better_than_reference(self) -> tuple[str, ...]:
        return tuple(a for a in self.estimators if held(self.against_reference(a)) is Outcome.BETTER)

    @property
    def worse_than_reference(self) -> tuple[str, ...]:
        return tuple(a for a in self.estimators if held(self.against_reference(a)) is Outcome.WORSE)

    def fidelity_of(self, estimator: str) -> EstimatorFidelity | None:
        return next((f for f in self.fidelity if f.estimator == estimator), None)

    @property
    def more_faithful(self) -> tuple[str, ...]:
        """The estimator arms whose estimator ranks the parameters more like the exact diagonal than
        grad-diff at the last checkpoint (Spearman); empty without fidelity for both."""
        reference = self.fidelity_of(REFERENCE_ESTIMATOR)
        if reference is None or reference.spearman[1] is None:
            return ()
        return tuple(arm for arm, estimator in self.estimators.items()
                     if (f := self.fidelity_of(estimator)) is not None and f.spearman[1] is not None
                     and f.spearman[1] > reference.spearman[1])

    @property
    def fidelity_only(self) -> tuple[str, ...]:
        """Estimators whose fidelity was measured but that no ``hessian-<base>-<estimator>`` arm trained."""
        trained = {REFERENCE_ESTIMATOR, *self.estimators.values()}
        return tuple(f.estimator for f in self.fidelity if f.estimator not in trained)

    @property
    def text(self) -> str:
        """The per-workload paragraph on this base's estimators."""
        rows = "; ".join(f"{arm} ({'grad-diff' if arm == self.reference else self.estimators[arm]}) "
                         f"{_short(self.against_base(arm))}, {_word(self.against_base(arm))}"
                         for arm in (self.reference, *self.estimators))
        direct = "; ".join(f"{arm} {_short(self.against_reference(arm))}, {_word(self.against_reference(arm))}"
                           for arm in self.estimators)
        if self.answer is Answer.UNTESTABLE:
            verdict = "single seed: whether an estimator changes the answer cannot be tested"
        elif self.answer is Answer.YES:
            verdict = (f"**a different estimator changes the answer here**: {_names(self.changed_by)} did better "
                       f"against {self.base} than grad-diff")
        else:
            verdict = f"**the answer does not change**: no estimator did better against {self.base} than grad-diff"
        text = (f"Estimators around {self.base}, final validation loss − {self.base}: {rows}. Against grad-diff "
                f"({self.reference}): {direct}. So {verdict}.")
        if self.fidelity:
            faithful = self.more_faithful
            text += f" Fidelity {_fidelity_text(self.fidelity)}."
            if faithful:
                text += (f" More faithful than grad-diff: {_names(faithful)}; of those, better than grad-diff in "
                         f"training: {_names([a for a in faithful if a in self.better_than_reference])}.")
            if self.fidelity_only:
                text += f" Measured for fidelity but not trained around {self.base}: {_names(self.fidelity_only)}."
        else:
            text += " Fidelity was not measured on this workload."
        return text


@dataclass(frozen=True)
class WrapAnswer:
    """Wrapping one base optimizer on one workload: ``wrapped − base`` in validation loss at the early
    epoch and at the end, paired by seed, Holm over the workload's wrapped/base pairs per epoch."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("effect", "text")

    workload: str
    base: str
    wrapped: str
    normalises: bool | None
    early: Comparison | None
    final: Comparison | None

    @property
    def effect(self) -> Effect:
        early, final = held(self.early), held(self.final)
        if final is Outcome.UNTESTABLE:
            return Effect.UNTESTABLE
        if {early, final} >= {Outcome.BETTER, Outcome.WORSE}:
            return Effect.MIXED
        if final is not Outcome.TIE:
            return Effect.HELPS if final is Outcome.BETTER else Effect.HURTS
        early_only = {Outcome.BETTER: Effect.FASTER_EARLY, Outcome.WORSE: Effect.SLOWER_EARLY}
        return early_only.get(early, Effect.NO_DIFFERENCE)

    @property
    def normalisation(self) -> str:
        words = {True: "normalises each coordinate itself, as Adam does",
                 False: "no per-coordinate normalisation of its own"}
        return words.get(self.normalises, "normalisation not classified")

    @property
    def text(self) -> str:
        early = "" if self.early is None else f"early (epoch {self.early.epoch}) {_short(self.early)}, "
        final = "" if self.final is None else f"final (epoch {self.final.epoch}) {_short(self.final)}"
        return (f"Wrapping {self.base} ({self.normalisation}): {self.wrapped} − {self.base} in validation loss "
                f"{early}{final} — **{self.effect.value}**.")


@dataclass(frozen=True)
class Questions:
    """The write-up's two questions on one workload (see the section comment above)."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("estimators_answer", "wrapping_answer", "texts")

    workload: str
    estimators: tuple[EstimatorAnswer, ...]
    wrapping: tuple[WrapAnswer, ...]
    fidelity: tuple[EstimatorFidelity, ...] = ()

    @property
    def estimators_answer(self) -> Answer:
        return _combined([a.answer for a in self.estimators])

    @property
    def unnormalised(self) -> tuple[WrapAnswer, ...]:
        """The wrapped bases without a per-coordinate normalisation of their own."""
        return tuple(w for w in self.wrapping if w.normalises is False)

    @property
    def wrapping_answer(self) -> Answer:
        """Does wrapping help a base without Adam's own normalisation (yes when it helps one of them)?"""
        pairs = self.unnormalised
        if not pairs:
            return Answer.NOT_TESTED
        if any(w.effect.helps for w in pairs):
            return Answer.YES
        return Answer.UNTESTABLE if all(w.effect is Effect.UNTESTABLE for w in pairs) else Answer.NO

    @property
    def texts(self) -> list[str]:
        """The paragraphs: better estimators, then other base optimizers."""
        if self.estimators:
            first = [a.text for a in self.estimators]
        else:
            first = ["Better estimators: **not tested** here (no `hessian-<base>-<estimator>` arm ran beside "
                     "`hessian-<base>` and `<base>`)."
                     + (" Fidelity alone, which does not say whether training improves: "
                        f"{_fidelity_text(self.fidelity)}." if self.fidelity else "")]
        if not self.wrapping:
            return first + ["Other base optimizers: **not tested** here (no `hessian-<base>` arm ran beside its "
                            "`<base>`)."]
        pairs = " ".join(w.text for w in self.wrapping)
        answer = self.wrapping_answer
        if answer is Answer.NOT_TESTED:
            closing = ("Whether wrapping helps a base without Adam's own normalisation is **not tested** here: no "
                       "such base (e.g. `sgd` with `hessian-sgd`) ran.")
        else:
            helped = [w.base for w in self.unnormalised if w.effect.helps]
            closing = ("Does wrapping help a base without Adam's own normalisation? "
                       + {Answer.YES: f"**Yes** here, for {_names(helped)}.",
                          Answer.NO: "**No** here: "
                          + "; ".join(f"{w.base}: {w.effect.value}" for w in self.unnormalised) + ".",
                          Answer.UNTESTABLE: "Untestable here (single seed)."}[answer])
        return first + [f"{pairs} {closing}"]


def _combined(answers: Sequence[Answer]) -> Answer:
    """Several bases' answers on one workload: yes if any is, untestable if all are, not tested if none."""
    if not answers:
        return Answer.NOT_TESTED
    if Answer.YES in answers:
        return Answer.YES
    return Answer.UNTESTABLE if all(a is Answer.UNTESTABLE for a in answers) else Answer.NO


def _questions(results: Results, fidelity: Mapping[str, Any] | None) -> Questions:
    arms = list(results.optimizers)
    epochs = int(results.config["epochs"])
    name = str(results.config.get("workload"))
    records = fidelity_records(fidelity)
    estimators = []
    for base in arms:
        reference, variants = f"{WRAPPED_PREFIX}{base}", estimator_arms(arms, base)
        if reference not in arms or not variants:
            continue
        vs_base = paired_rows(results, [(a, base) for a in (reference, *variants)], "val_loss", epochs)
        vs_reference = paired_rows(results, [(a, reference) for a in variants], "val_loss", epochs)
        estimators.append(EstimatorAnswer(
            workload=name, base=base, reference=reference, estimators=variants,
            vs_base=tuple(map(Comparison.from_row, vs_base)),
            vs_reference=tuple(map(Comparison.from_row, vs_reference)),
            fidelity=records))
    pairs = [(f"{WRAPPED_PREFIX}{base}", base) for base in arms if f"{WRAPPED_PREFIX}{base}" in arms]
    rows = {epoch: [Comparison.from_row(r) for r in paired_rows(results, pairs, "val_loss", epoch)]
            for epoch in sorted({early_epoch(epochs), epochs})}
    wrapping = tuple(WrapAnswer(workload=name, base=base, wrapped=wrapped, normalises=NORMALISES.get(base),
                                early=rows[early_epoch(epochs)][i] if early_epoch(epochs) < epochs else None,
                                final=rows[epochs][i])
                     for i, (wrapped, base) in enumerate(pairs))
    return Questions(workload=name, estimators=tuple(estimators), wrapping=wrapping, fidelity=records)


# -- tuning luck (repeated studies) -------------------------------------------------------------------

@dataclass(frozen=True)
class TuningLuck:
    """How an arm's tuned result varies over ``K`` independent studies (``budget.tuning_spread``) and
    whether its final difference from the baseline is larger than that study-to-study range
    (Sivaprasad et al. 2020; AlgoPerf, Dahl et al. 2023, repeats its studies for the same reason).

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


def _tuning_luck(results: Results, comparisons: Sequence[Comparison]) -> tuple[TuningLuck, ...]:
    if not any(r.studies for r in results.optimizers.values()):
        return ()
    spreads = spreads_from_results(results)
    base = results.extra["pairwise"]["baseline"]
    epochs = int(results.config["epochs"])
    return tuple(TuningLuck(arm=arm, baseline=base, spread=spread, baseline_spread=spreads[base],
                            final=None if arm == base else _find(comparisons, arm, "val_loss", epochs))
                 for arm, spread in spreads.items())


@dataclass(frozen=True)
class WorkloadVerdicts:
    """Every verdict of one workload's report (see the module docstring)."""

    workload: str
    baseline: str
    seeds: int  # the most seeds any arm's final setting ran with
    comparisons: tuple[Comparison, ...]
    equal_lr: tuple[Comparison, ...]
    lr_order: str | None
    reproduction: Reproduction | None
    conclusion: Conclusion
    questions: Questions
    tuning_luck: tuple[TuningLuck, ...] = ()  # with repeated tuning studies only

    def comparison(self, arm: str, metric: str, epoch: int) -> Comparison | None:
        """The difference ``arm − baseline`` in ``metric`` at ``epoch``, if it was computed."""
        return _find(self.comparisons, arm, metric, epoch)


def workload_verdicts(results: Results, fidelity: Mapping[str, Any] | None = None) -> WorkloadVerdicts:
    """Judge one workload's summarized results.

    Args:
        results: results that ``summary.summarize`` has filled (``extra["pairwise"]`` and, when the
            ablation ran, ``extra["ablation"]``); they are only read.
        fidelity: the workload's ``fidelity.json`` for the estimator question; by default
            ``results.extra["fidelity"]`` (what ``attach_fidelity`` copied in), if any.

    Returns:
        The ``WorkloadVerdicts``.

    Raises:
        ValueError: the results were not summarized.
    """
    comparisons = _comparisons(results)
    equal_lr = tuple(Comparison.from_row(r) for r in (results.extra.get("ablation") or {}).get("equal_lr") or [])
    seeds = max(len(seed_runs(r.final)) for r in results.optimizers.values())
    return WorkloadVerdicts(
        workload=str(results.config.get("workload")), baseline=results.extra["pairwise"]["baseline"], seeds=seeds,
        comparisons=comparisons, equal_lr=equal_lr, lr_order=_lr_order(results),
        reproduction=_reproduction(results, comparisons), conclusion=_conclusion(results, comparisons, equal_lr, seeds),
        questions=_questions(results, fidelity if fidelity is not None else results.extra.get("fidelity")),
        tuning_luck=_tuning_luck(results, comparisons))


# -- across workloads -------------------------------------------------------------------------------

def final_comparisons(results: Results, metric: str = "val_loss") -> list[Comparison]:
    """Each arm's difference from the baseline in ``metric`` at the workload's last epoch.

    Args:
        results: one workload's summarized results.
        metric: ``val_loss`` (default), ``test_loss`` or ``test_accuracy``.

    Returns:
        One ``Comparison`` per arm other than the baseline, in the pairwise rows' order.
    """
    epochs = int(results.config["epochs"])
    return [c for c in _comparisons(results) if c.metric == metric and c.epoch == epochs]


@dataclass(frozen=True)
class WinTieLossCell:
    """One arm on one workload: ``outcome`` BETTER is a win, WORSE a loss, TIE a tie."""

    workload: str
    arm: str
    outcome: Outcome
    comparison: Comparison


@dataclass(frozen=True)
class WinTieLossCount:
    """One arm's totals over the workloads where it was compared with the baseline.

    ``wins_after_holm`` / ``losses_after_holm``: those wins / losses whose Holm-adjusted p (over the
    arms of that workload) is also below ALPHA, or that have no Holm p (a single arm against the
    baseline). A win or loss is counted by its CI alone, as the definition says; these two
    columns say how many also survive the multiple-comparison correction.
    """

    EXPORTED: ClassVar[tuple[str, ...]] = ("text",)

    arm: str
    workloads: int
    wins: int
    ties: int
    losses: int
    untestable: int
    wins_after_holm: int
    losses_after_holm: int

    @property
    def text(self) -> str:
        """``arm against baseline over 3 workloads: 1 win, 1 tie, 0 losses, 1 untestable (...)``."""
        def n(count: int, word: str, plural: str) -> str:
            return f"{count} {word if count == 1 else plural}"

        return (f"{n(self.wins, 'win', 'wins')}, {n(self.ties, 'tie', 'ties')}, "
                f"{n(self.losses, 'loss', 'losses')}, {self.untestable} untestable over "
                f"{n(self.workloads, 'workload', 'workloads')} (after Holm's correction: "
                f"{n(self.wins_after_holm, 'win', 'wins')}, {n(self.losses_after_holm, 'loss', 'losses')})")


@dataclass(frozen=True)
class WinTieLoss:
    """``win_tie_loss``'s result: one cell per (workload, arm), totals per arm against ``baseline``."""

    baseline: str
    metric: str
    workloads: tuple[str, ...]
    arms: tuple[str, ...]
    cells: tuple[WinTieLossCell, ...]
    counts: dict[str, WinTieLossCount]

    def cell(self, workload: str, arm: str) -> WinTieLossCell | None:
        """The arm's cell on that workload; None when the arm was not compared there."""
        return next((c for c in self.cells if c.workload == workload and c.arm == arm), None)


def win_tie_loss(results_by_workload: Mapping[str, Results], metric: str = "val_loss") -> WinTieLoss:
    """Win / tie / loss of every arm against the baseline, over workloads.

    On each workload, an arm wins when the paired 95% CI of ``arm − baseline`` in the final
    ``metric`` lies entirely on its good side of 0 (below for a loss), loses when it lies entirely
    on the other side, ties when it contains 0, and is untestable without a CI (one seed). It sits
    beside the performance profiles (``profiles.py``; Dahl et al. 2023, arXiv:2306.07179): the
    profile ranks the time to target, this counts the final-loss differences outside seed noise.
    The rows are those ``summary.summarize`` computed (``extra["pairwise"]``), Holm p included.

    Args:
        results_by_workload: workload name → that workload's summarized results.
        metric: ``val_loss`` (default), ``test_loss`` or ``test_accuracy``.

    Returns:
        A ``WinTieLoss``: a cell per (workload, compared arm) and the totals per arm, arms in the
        order they first appear.

    Raises:
        ValueError: no workloads, or the workloads were compared against different baselines.
    """
    if not results_by_workload:
        raise ValueError("win_tie_loss needs at least one workload")
    baselines = {name: (r.extra.get("pairwise") or {}).get("baseline") for name, r in results_by_workload.items()}
    if len(set(baselines.values())) != 1:
        raise ValueError(f"the workloads were compared against different baselines: {baselines}")
    cells = tuple(WinTieLossCell(workload=name, arm=c.arm, outcome=c.outcome, comparison=c)
                  for name, results in results_by_workload.items() for c in final_comparisons(results, metric))
    arms = tuple(dict.fromkeys(c.arm for c in cells))
    return WinTieLoss(baseline=str(next(iter(baselines.values()))), metric=metric,
                      workloads=tuple(results_by_workload), arms=arms, cells=cells,
                      counts={arm: _count(arm, [c for c in cells if c.arm == arm]) for arm in arms})


def _count(arm: str, cells: Sequence[WinTieLossCell]) -> WinTieLossCount:
    def number(outcome: Outcome, after_holm: bool = False) -> int:
        return sum(c.outcome is outcome and (not after_holm or c.comparison.survives_holm) for c in cells)

    return WinTieLossCount(arm=arm, workloads=len(cells), wins=number(Outcome.BETTER), ties=number(Outcome.TIE),
                           losses=number(Outcome.WORSE), untestable=number(Outcome.UNTESTABLE),
                           wins_after_holm=number(Outcome.BETTER, after_holm=True),
                           losses_after_holm=number(Outcome.WORSE, after_holm=True))


@dataclass(frozen=True)
class ClaimAcrossWorkloads:
    """One claim (by ``id``) judged on every workload that could test it."""

    id: str
    statement: str
    statuses: dict[str, ClaimStatus]  # workload → status

    def count(self, status: ClaimStatus) -> int:
        """On how many workloads the claim has ``status``."""
        return sum(s is status for s in self.statuses.values())


def claims_across_workloads(verdicts_by_workload: Mapping[str, WorkloadVerdicts]) -> list[ClaimAcrossWorkloads]:
    """Tally each reproduced claim's status over the workloads (those without a reproduction are left out).

    Args:
        verdicts_by_workload: workload name → ``workload_verdicts`` of its results.

    Returns:
        One record per claim id, in the order the claims first appear.
    """
    statuses: dict[str, dict[str, ClaimStatus]] = {}
    statements: dict[str, str] = {}
    for name, verdicts in verdicts_by_workload.items():
        for claim in verdicts.reproduction.claims if verdicts.reproduction else ():
            statements.setdefault(claim.id, claim.statement)
            statuses.setdefault(claim.id, {})[name] = claim.status
    return [ClaimAcrossWorkloads(id=i, statement=statements[i], statuses=statuses[i]) for i in statements]


@dataclass(frozen=True)
class ProfileStanding:
    """One arm's place in the performance profiles: its score, on how many workloads it was the
    fastest (ratio 1, ties included) and on how many it reached the target at all."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("text",)

    arm: str
    score: float
    fastest_on: int
    reached_on: int
    workloads: int

    @property
    def text(self) -> str:
        return (f"{self.arm}: score {self.score:.3f}, fastest on {self.fastest_on} of {self.workloads} workload(s), "
                f"reached the target on {self.reached_on}")


def profile_standings(profiles: PerformanceProfiles) -> list[ProfileStanding]:
    """The arms ranked by their performance-profile score (highest first; ties keep the arms' order).

    Args:
        profiles: ``profiles.performance_profiles``'s result.

    Returns:
        One ``ProfileStanding`` per arm.
    """
    standings = [ProfileStanding(arm=arm, score=profiles.scores[arm],
                                 fastest_on=sum(r == 1.0 for r in profiles.ratios_of(arm)),
                                 reached_on=sum(math.isfinite(r) for r in profiles.ratios_of(arm)),
                                 workloads=len(profiles.workloads)) for arm in profiles.arms]
    return sorted(standings, key=lambda s: -s.score)


# -- the suite: every workload, and across them ---------------------------------------------------------

@dataclass(frozen=True)
class SuiteConclusion:
    """The suite's generated conclusion: a paragraph list per workload, the overall paragraphs, and
    what is statistically supported, not supported, and not tested at all."""

    per_workload: dict[str, tuple[str, ...]]
    overall: tuple[str, ...]
    supported: tuple[str, ...]
    not_supported: tuple[str, ...]
    not_tested: tuple[str, ...]


@dataclass(frozen=True)
class SuiteVerdicts:
    """Every verdict of the suite report (``suite_verdicts``)."""

    baseline: str
    workloads: dict[str, WorkloadVerdicts]
    win_tie_loss: WinTieLoss
    claims: tuple[ClaimAcrossWorkloads, ...]
    standings: dict[str, tuple[ProfileStanding, ...]]  # clock → ranked arms
    conclusion: SuiteConclusion


@dataclass
class _Tally:
    """The overall paragraphs being written, with their supported / not supported / not tested items."""

    overall: list[str] = field(default_factory=list)
    supported: list[str] = field(default_factory=list)
    not_supported: list[str] = field(default_factory=list)
    not_tested: list[str] = field(default_factory=list)


def _by_value(statuses: Mapping[str, Enum], order: Sequence[Enum]) -> list[tuple[Enum, list[str]]]:
    """``[(value, [workloads with it])]`` in ``order``, values nobody has left out."""
    return [(v, ws) for v in order if (ws := [w for w, s in statuses.items() if s is v])]


def _claims_overall(claims: Sequence[ClaimAcrossWorkloads], workloads: Sequence[str], tally: _Tally) -> None:
    if not claims:
        tally.overall.append(f"The write-up's claim ({ORIGINAL_CLAIM}) is **not tested**: no workload ran both adam "
                             "and hessian-adam.")
        tally.not_tested.append(f"the write-up's claim ({ORIGINAL_CLAIM}): adam and hessian-adam never ran together")
        return
    for claim in claims:
        groups = _by_value(claim.statuses, list(ClaimStatus))
        untested = [w for w in workloads if w not in claim.statuses]
        text = (f"The write-up's claim “{claim.statement}” (hessian-adam vs adam), over the "
                f"{_counted(len(claim.statuses), 'workload')} that test it: "
                + "; ".join(f"{status.value} on {len(ws)} ({_names(ws)})" for status, ws in groups))
        if untested:
            text += f"; not tested on {_names(untested)} (adam and hessian-adam did not both run)"
        tally.overall.append(text + ".")
        for status, ws in groups:
            item = f"“{claim.statement}” on {_names(ws)}"
            if status is ClaimStatus.SUPPORTED:
                tally.supported.append(item)
            elif status in (ClaimStatus.CONTRADICTED, ClaimStatus.NOT_SUPPORTED):
                tally.not_supported.append(f"{item} ({status.value})")
            else:  # one seed, or no difference at all: no statistical test was possible
                tally.not_tested.append(f"{item} ({status.value}: no test possible)")


def _estimators_overall(questions: Mapping[str, Questions], tally: _Tally) -> None:
    answers = [(w, a) for w, q in questions.items() for a in q.estimators]
    untested = [w for w, q in questions.items() if not q.estimators]
    if not answers:
        text = ("Would better curvature estimators change the answer? **Not tested**: no workload ran a "
                "`hessian-<base>-<estimator>` arm beside `hessian-<base>` and `<base>`, so the suite cannot say.")
        measured = {w: q.fidelity for w, q in questions.items() if q.fidelity}
        if measured:
            text += (" Fidelity alone (how closely each estimator tracks the exact Hessian diagonal, not whether "
                     "training improves): " + "; ".join(f"{w}: {_fidelity_text(f)}" for w, f in measured.items()) + ".")
        tally.overall.append(text)
        tally.not_tested.append("whether a better curvature estimator changes the answer (no estimator arms ran)")
        return
    def case(w: str, a: EstimatorAnswer) -> str:
        changed = f": {_names(a.changed_by)} did better against {a.base} than grad-diff" if a.changed_by else ""
        return f"{w} ({a.base}{changed})"

    by_answer = {case(w, a): a.answer for w, a in answers}
    parts = [f"{answer.value} on {_names(ws)}" for answer, ws in _by_value(by_answer, list(Answer))]
    text = ("Would better curvature estimators change the answer? Over the (workload, base optimizer) pairs that "
            "test it: " + "; ".join(parts))
    if untested:
        text += f"; not tested on {_names(untested)}"
    faithful = [(w, a, arm) for w, a in answers for arm in a.more_faithful]
    if faithful:
        better = sum(arm in a.better_than_reference for _, a, arm in faithful)
        worse = sum(arm in a.worse_than_reference for _, a, arm in faithful)
        cases = f"{len(faithful)} (workload, estimator) case{'' if len(faithful) == 1 else 's'}"
        text += (f". Of {cases} where the estimator tracked the exact diagonal"
                 f" more closely than grad-diff at the end of training (Spearman), it reached a lower final "
                 f"validation loss than grad-diff in {better}, a higher one in {worse}, and one within noise in "
                 f"{len(faithful) - better - worse}")
    no_fidelity = sorted({w for w, a in answers if not a.fidelity})
    if no_fidelity:
        text += f"; fidelity not measured on {_names(no_fidelity)}"
    tally.overall.append(text + ".")
    for w, a in answers:
        if a.answer is Answer.YES:
            tally.supported.append(f"a different estimator ({_names(a.changed_by)}) changes the answer against "
                                   f"{a.base} on {w}")
        elif a.answer is Answer.NO:
            tally.not_supported.append(f"that a better estimator changes the answer against {a.base} on {w}")
    if untested:
        tally.not_tested.append(f"better estimators on {_names(untested)}")
    for w, a in answers:
        if a.fidelity_only:
            tally.not_tested.append(f"training with {_names(a.fidelity_only)} around {a.base} on {w} (fidelity "
                                    "measured, no arm ran)")


def _wrapping_overall(questions: Mapping[str, Questions], tally: _Tally) -> None:
    pairs = [w for q in questions.values() for w in q.wrapping]
    if not pairs:
        tally.overall.append("Would other base optimizers change the answer? **Not tested**: no workload ran a "
                             "`hessian-<base>` arm beside its `<base>`.")
        tally.not_tested.append("other base optimizers (no wrapped/plain pair ran)")
        return
    for base in dict.fromkeys(w.base for w in pairs):
        mine = [w for w in pairs if w.base == base]
        groups = _by_value({w.workload: w.effect for w in mine}, list(Effect))
        tally.overall.append(f"Wrapping {base} ({mine[0].normalisation}), {mine[0].wrapped} − {base} over "
                             f"{_counted(len(mine), 'workload')}: "
                             + "; ".join(f"{effect.value} on {_names(ws)}" for effect, ws in groups) + ".")
    unnormalised = [w for w in pairs if w.normalises is False]
    if not unnormalised:
        tally.overall.append("Does wrapping help a base without Adam's own normalisation? **Not tested**: no such base "
                             "(e.g. `sgd` with `hessian-sgd`) ran.")
        tally.not_tested.append("wrapping a base without Adam's normalisation (e.g. hessian-sgd vs sgd)")
        return
    helped = [w for w in unnormalised if w.effect.helps]
    reference = [w for w in pairs if w.normalises]
    text = (f"Does wrapping help a base without Adam's own normalisation? It helped on {len(helped)} of "
            f"{len(unnormalised)} (workload, base) pairs ({_names([f'{w.workload}: {w.base}' for w in helped])})")
    if reference:
        text += (f", against {sum(w.effect.helps for w in reference)} of {len(reference)} for the bases that "
                 f"normalise themselves ({_names(list(dict.fromkeys(w.base for w in reference)))})")
    tally.overall.append(text + ".")
    for w in unnormalised:
        if w.effect.helps:
            tally.supported.append(f"wrapping {w.base} {w.effect.value} on {w.workload}")
        elif w.effect is not Effect.UNTESTABLE:
            tally.not_supported.append(f"that wrapping helps {w.base} on {w.workload} ({w.effect.value})")


def _workload_paragraphs(verdicts: WorkloadVerdicts) -> tuple[str, ...]:
    if verdicts.reproduction is None:
        claim = f"The write-up's claim ({ORIGINAL_CLAIM}): **not tested** (adam and hessian-adam did not both run)."
    else:
        claim = "The write-up's claim: " + " ".join(c.text for c in verdicts.reproduction.claims)
    return (claim, *verdicts.questions.texts)


def suite_verdicts(results_by_workload: Mapping[str, Results], profiles: Mapping[str, PerformanceProfiles],
                   fidelity_by_workload: Mapping[str, Mapping[str, Any] | None] | None = None) -> SuiteVerdicts:
    """Judge a suite: every workload as compare's report does, and the write-up's claim and questions
    across the workloads.

    Args:
        results_by_workload: workload → its summarized results (the same baseline, the first arm, on
            every workload).
        profiles: clock (``"steps"``, ``"wall_s"``) → ``profiles.performance_profiles`` over the
            workloads (Dahl et al. 2023, arXiv:2306.07179).
        fidelity_by_workload: workload → its ``fidelity.json`` (missing or ``None``: not measured).

    Returns:
        The ``SuiteVerdicts``; its conclusion says per workload and overall what the data support,
        what they do not, and what the suite did not test.

    Raises:
        ValueError: no workloads, or workloads compared against different baselines.
    """
    fidelity_by_workload = fidelity_by_workload or {}
    table = win_tie_loss(results_by_workload)
    verdicts = {w: workload_verdicts(r, fidelity=fidelity_by_workload.get(w)) for w, r in results_by_workload.items()}
    claims = tuple(claims_across_workloads(verdicts))
    standings = {clock: tuple(profile_standings(p)) for clock, p in profiles.items()}
    tally = _Tally()
    _claims_overall(claims, list(verdicts), tally)
    questions = {w: v.questions for w, v in verdicts.items()}
    _estimators_overall(questions, tally)
    _wrapping_overall(questions, tally)
    for clock, ranked in standings.items():
        clock_words = "steps" if clock == "steps" else "wall seconds"
        tally.overall.append(f"Performance profiles ({clock_words} to the target, "
                             "AlgoPerf's score on τ ∈ [1, 4]): " + "; ".join(s.text for s in ranked) + ".")
    counts = "; ".join(f"{arm}: {count.text}" for arm, count in table.counts.items())
    tally.overall.append(f"Final validation loss against {table.baseline} (a win or loss: the paired 95% CI "
                         f"excludes 0): {counts}.")
    tally.overall.append("Each workload is judged on its own paired seeds. A win or loss, and the write-up's claim, "
                         "count a 95% CI alone (as compare's report does); the two questions count a difference only "
                         "when it also survives Holm's correction over that question's comparisons on that workload. "
                         "Counts over a handful of workloads describe these workloads; they are not a test over "
                         "workloads.")
    conclusion = SuiteConclusion(per_workload={w: _workload_paragraphs(v) for w, v in verdicts.items()},
                                 overall=tuple(tally.overall), supported=tuple(tally.supported),
                                 not_supported=tuple(tally.not_supported), not_tested=tuple(tally.not_tested))
    return SuiteVerdicts(baseline=table.baseline, workloads=verdicts, win_tie_loss=table, claims=claims,
                         standings=standings, conclusion=conclusion)


def verdict_data(record: Any) -> Any:
    """Any verdict record as JSON-ready data: dataclass fields (and the properties a class lists in
    ``EXPORTED``), enums as their values, tuples as lists, non-finite floats as ``None``."""
    if is_dataclass(record) and not isinstance(record, type):
        data = {f.name: verdict_data(getattr(record, f.name)) for f in fields(record)}
        data.update({name: verdict_data(getattr(record, name)) for name in getattr(type(record), "EXPORTED", ())})
        return data
    if isinstance(record, Enum):
        return record.value
    if isinstance(record, Mapping):
        return {str(k): verdict_data(v) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [verdict_data(v) for v in record]
    if isinstance(record, float) and not math.isfinite(record):
        return None
    return record
