"""Every verdict of a report, computed as data: which differences are real, which of the original
write-up's claims hold, what the conclusion says. ``document.py`` (and through it ``report.md`` and
``report.html``) only lays these records out; no comparative sentence is written anywhere else.

Per workload: ``workload_verdicts(results)`` judges one summarized ``Results`` (see
``summary.summarize``) and returns a ``WorkloadVerdicts``:

- ``comparisons``: every paired difference ``arm − baseline`` of ``results.extra["pairwise"]`` as a
  ``Comparison`` (its ``outcome``: better / worse / tie / untestable, and whether it survives Holm);
- ``equal_lr``: the equal-lr ablation's differences, judged the same way (on their CIs alone);
- ``reproduction``: the original write-up's claims as ``Claim`` records (supported, contradicted,
  not supported, untestable, or only a single-seed sign);
- ``conclusion``: per arm the ``Finding`` sentences and the lists of what is and is not supported.

Across workloads (the suite report): ``win_tie_loss(results_by_workload)`` counts, per arm, the
workloads where its paired 95% CI against the baseline lies below / contains / lies above zero, and
``claims_across_workloads(verdicts_by_workload)`` tallies each claim's status over the workloads,
and ``profile_standings(profiles)`` ranks the arms by their performance-profile score.

The rule throughout: a difference is real when the two-sided 95% t interval of the paired (same
seed) difference excludes 0; a claim against the baseline must also survive Holm's correction over
the arms compared at that epoch (Holm 1979). A single seed gives no interval, so no claim.

Texts carry the report's inline markup: ``**bold**`` and ```code```.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any

from hessian_lr.report.formatting import fmt_ci, fmt_p, fmt_p_inline, fmt_signed
from hessian_lr.report.profiles import PerformanceProfiles
from hessian_lr.report.summary import baseline_arm, early_epoch, seed_runs
from hessian_lr.results import Results

__all__ = ["ALPHA", "ORIGINAL_BEST_LR", "ORIGINAL_CLAIM", "Outcome", "ClaimStatus", "Comparison", "Claim",
           "Reproduction", "Finding", "ArmConclusion", "Conclusion", "WorkloadVerdicts", "WinTieLossCell",
           "WinTieLossCount", "WinTieLoss", "ClaimAcrossWorkloads", "ProfileStanding", "direction", "difference_text",
           "judge_claim", "workload_verdicts", "final_comparisons", "win_tie_loss", "claims_across_workloads",
           "profile_standings"]

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

    claim: str
    original_lr: dict[str, float]
    tuned_lr: dict[str, float]
    claims: tuple[Claim, ...]

    @property
    def intro(self) -> str:
        (o_adam, o_hess), (adam, hess) = ((lrs["adam"], lrs["hessian-adam"]) for lrs in (self.original_lr, self.tuned_lr))
        return (f"The original write-up tuned adam to lr {o_adam:.5f} and hessian-adam to {o_hess:.5f}; here they "
                f"tuned to {adam:.5f} and {hess:.5f} (hessian-adam's lr is {_relation(hess, adam)} adam's here; "
                f"in the write-up it was {_relation(o_hess, o_adam).split()[0]}). Its claim: {self.claim}.")


def _reproduction(results: Results, comparisons: Sequence[Comparison]) -> Reproduction | None:
    """The write-up compared hessian-adam with adam: only a run with both (adam the baseline) tests it."""
    if not {"adam", "hessian-adam"} <= set(results.optimizers):
        return None
    if (results.extra.get("pairwise") or {}).get("baseline") != "adam":
        return None
    epochs = int(results.config["epochs"])
    early = early_epoch(epochs)
    early_row = _find(comparisons, "hessian-adam", "val_loss", early)
    end_row = _find(comparisons, "hessian-adam", "val_loss", epochs)
    if early_row is None or end_row is None:
        return None
    claims = (_claim("original/faster-early", "Faster early", early_row, -1, f"validation loss at epoch {early}"),
              _claim("original/adam-lower-at-end", "Adam slightly lower at the end", end_row, +1,
                     f"validation loss at epoch {epochs}"))
    return Reproduction(claim=ORIGINAL_CLAIM, original_lr=dict(ORIGINAL_BEST_LR),
                        tuned_lr={a: results.optimizers[a].best_lr for a in ("adam", "hessian-adam")}, claims=claims)


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

    arm: str
    baseline: str
    findings: tuple[Finding, ...]

    @property
    def text(self) -> str:
        return f"**{self.arm} vs {self.baseline}.** " + " ".join(f.text for f in self.findings)


@dataclass(frozen=True)
class Conclusion:
    """Per-arm paragraphs, then ``closing`` paragraphs (what is and is not supported, caveats)."""

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
    """``Ordered by tuned learning rate (lowest first): a (0.00100) < b (0.00200) = c (0.00200).``"""
    if len(results.optimizers) < 2:
        return None
    lrs = {arm: r.best_lr for arm, r in results.optimizers.items()}
    ordered = sorted(lrs, key=lrs.__getitem__)
    text = f"{ordered[0]} ({lrs[ordered[0]]:.5f})"
    for previous, arm in zip(ordered, ordered[1:]):
        text += f" {'=' if lrs[arm] == lrs[previous] else '<'} {arm} ({lrs[arm]:.5f})"
    return f"Ordered by tuned learning rate (lowest first): {text}."


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

    def comparison(self, arm: str, metric: str, epoch: int) -> Comparison | None:
        """The difference ``arm − baseline`` in ``metric`` at ``epoch``, if it was computed."""
        return _find(self.comparisons, arm, metric, epoch)


def workload_verdicts(results: Results) -> WorkloadVerdicts:
    """Judge one workload's summarized results.

    Args:
        results: results that ``summary.summarize`` has filled (``extra["pairwise"]`` and, when the
            ablation ran, ``extra["ablation"]``); they are only read.

    Returns:
        The ``WorkloadVerdicts``.

    Raises:
        ValueError: the results were not summarized.
    """
    comparisons = _comparisons(results)
    equal_lr = tuple(Comparison.from_row(r) for r in (results.extra.get("ablation") or {}).get("equal_lr") or [])
    seeds = max(len(seed_runs(r.final)) for r in results.optimizers.values())
    return WorkloadVerdicts(
        workload=str(results.config.get("workload")), baseline=results.extra["pairwise"]["baseline"], seeds=seeds, comparisons=comparisons, equal_lr=equal_lr,
        lr_order=_lr_order(results), reproduction=_reproduction(results, comparisons),
        conclusion=_conclusion(results, comparisons, equal_lr, seeds))


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
