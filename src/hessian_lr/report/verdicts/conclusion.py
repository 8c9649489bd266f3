"""One workload's conclusion: per arm, what its differences from the baseline say, and then what is
and is not statistically supported.

Per arm against the baseline: the early and final validation loss and the test accuracy
(``Finding`` of kind ``difference``: supported only when the CI excludes 0 and the difference
survives Holm's correction over the arms), the time to target, and the equal-lr ablation at the
early and the final epoch (judged on its CIs alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from hessian_lr.report.formatting import fmt_ci, fmt_p, fmt_signed
from hessian_lr.report.summary import baseline_arm, early_epoch
from hessian_lr.report.verdicts.comparisons import ALPHA, Comparison, Outcome, difference_text, find
from hessian_lr.results import Results

__all__ = ["Finding", "ArmConclusion", "Conclusion", "conclude"]


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


def conclude(results: Results, comparisons: Sequence[Comparison], equal_lr: Sequence[Comparison],
             seeds: int) -> Conclusion:
    """The conclusion of one workload.

    Args:
        results: its summarized results.
        comparisons: their pairwise rows against the baseline.
        equal_lr: the equal-lr ablation's differences (empty without the ablation).
        seeds: the most seeds any arm's final setting ran with (one: no statistical claim at all).

    Returns:
        The ``Conclusion``: a paragraph per arm other than the baseline, then the closing paragraphs.
    """
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
                    if (c := find(comparisons, arm, metric, epoch)) is not None]
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
