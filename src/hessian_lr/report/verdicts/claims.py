"""A write-up's claims reproduced: judged on one workload, tallied over a suite's workloads.

The claims are data (``protocols.WriteUp``: two arms, their tuned lrs, directional claims about the
validation loss of ``candidate − baseline``); the rules here judge any such record. A run that trained
both arms tests them, whichever arm is its baseline: against the baseline the pairwise row is used
(its Holm p over the arms), otherwise the difference is computed from the seeds as one
pre-specified comparison. A claim holds when the 95% CI lies on the claimed side of 0; a single
seed gives only the sign.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from hessian_lr.protocols import WriteUp
from hessian_lr.report.spaces import arm_space, tunes_lr
from hessian_lr.report.summary import early_epoch
from hessian_lr.report.verdicts.comparisons import Comparison, difference_text, versus
from hessian_lr.report.verdicts.tally import SuiteEvidence, SuiteQuestion, Tally, by_value
from hessian_lr.report.verdicts.text import counted, names, relation
from hessian_lr.results import Results

if TYPE_CHECKING:
    from hessian_lr.report.verdicts.workload import WorkloadVerdicts

__all__ = ["ClaimStatus", "judge_claim", "Claim", "Reproduction", "reproduce", "workload_paragraph",
           "ClaimAcrossWorkloads", "claims_across_workloads", "ACROSS"]


class ClaimStatus(str, Enum):
    """What the data say about a directional claim."""

    SUPPORTED = "supported"  # the CI lies on the claimed side of 0
    CONTRADICTED = "contradicted"  # it lies on the other side
    NOT_SUPPORTED = "not supported"  # it contains 0
    UNTESTABLE = "untestable"  # no difference at all (no row, or every pair diverged)
    SINGLE_SEED_SIGN = "single-seed sign"  # one seed: only the sign of the difference is known


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


@dataclass(frozen=True)
class Reproduction:
    """A write-up's tuned lrs beside ours (``None``: the arm's space does not tune the lr), and its
    claims judged on these data."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("intro",)

    write_up: WriteUp
    tuned_lr: dict[str, float | None]
    claims: tuple[Claim, ...]

    @property
    def intro(self) -> str:
        baseline, candidate = self.write_up.arms
        (o_base, o_cand), (base, cand) = ((lrs[baseline], lrs[candidate])
                                          for lrs in (self.write_up.tuned_lr, self.tuned_lr))
        original = f"in the write-up it was {relation(o_cand, o_base).split()[0]}"
        if base is None or cand is None:
            untuned = baseline if base is None else candidate
            here = f"here the lr of {untuned} was not tuned, so the lrs cannot be set side by side"
        else:
            here = (f"here they tuned to {base:.5f} and {cand:.5f} ({candidate}'s lr is {relation(cand, base)} "
                    f"{baseline}'s here; {original})")
        return (f"The original write-up tuned {baseline} to lr {o_base:.5f} and {candidate} to {o_cand:.5f}; {here}. "
                f"Its claim: {self.write_up.statement}.")


def reproduce(results: Results, comparisons: Sequence[Comparison], write_up: WriteUp) -> Reproduction | None:
    """Judge ``write_up``'s claims on one workload.

    Args:
        results: the workload's summarized results.
        comparisons: their pairwise rows (``comparisons.comparisons_of``).
        write_up: the claims and the two arms they compare.

    Returns:
        The ``Reproduction``, or None when the run did not train both arms (or a difference is missing).
    """
    baseline, candidate = write_up.arms
    if not {baseline, candidate} <= set(results.optimizers):
        return None
    epochs = int(results.config["epochs"])
    at = {"early": early_epoch(epochs), "final": epochs}
    rows = {when: versus(results, comparisons, candidate, baseline, epoch) for when, epoch in at.items()}
    if any(rows[stated.at] is None for stated in write_up.claims):
        return None
    claims = tuple(_claim(stated.id, stated.statement, rows[stated.at], stated.direction,
                          f"validation loss at epoch {at[stated.at]}") for stated in write_up.claims)
    return Reproduction(write_up=write_up,
                        tuned_lr={a: results.optimizers[a].best_lr if tunes_lr(arm_space(results, a)) else None
                                  for a in write_up.arms}, claims=claims)


def workload_paragraph(reproduction: Reproduction | None, write_up: WriteUp) -> str:
    """The suite conclusion's sentence on the claim for one workload."""
    if reproduction is None:
        baseline, candidate = write_up.arms
        return (f"The write-up's claim ({write_up.statement}): **not tested** ({baseline} and {candidate} did not "
                "both run).")
    return "The write-up's claim: " + " ".join(c.text for c in reproduction.claims)


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


def _judge(evidence: SuiteEvidence) -> tuple[ClaimAcrossWorkloads, ...]:
    return tuple(claims_across_workloads(evidence.verdicts))


def _write(claims: Sequence[ClaimAcrossWorkloads], evidence: SuiteEvidence, tally: Tally) -> None:
    """Each claim's statuses over the workloads that test it, filed as supported / not / not tested."""
    write_up = evidence.write_up
    baseline, candidate = write_up.arms
    if not claims:
        tally.overall.append(f"The write-up's claim ({write_up.statement}) is **not tested**: no workload ran both "
                             f"{baseline} and {candidate}.")
        tally.not_tested.append(f"the write-up's claim ({write_up.statement}): {baseline} and {candidate} never ran "
                                "together")
        return
    workloads = list(evidence.verdicts)
    for claim in claims:
        groups = by_value(claim.statuses, list(ClaimStatus))
        untested = [w for w in workloads if w not in claim.statuses]
        text = (f"The write-up's claim “{claim.statement}” ({candidate} vs {baseline}), over the "
                f"{counted(len(claim.statuses), 'workload')} that test it: "
                + "; ".join(f"{status.value} on {len(ws)} ({names(ws)})" for status, ws in groups))
        if untested:
            text += f"; not tested on {names(untested)} ({baseline} and {candidate} did not both run)"
        tally.overall.append(text + ".")
        for status, ws in groups:
            item = f"“{claim.statement}” on {names(ws)}"
            if status is ClaimStatus.SUPPORTED:
                tally.supported.append(item)
            elif status in (ClaimStatus.CONTRADICTED, ClaimStatus.NOT_SUPPORTED):
                tally.not_supported.append(f"{item} ({status.value})")
            else:  # one seed, or no difference at all: no statistical test was possible
                tally.not_tested.append(f"{item} ({status.value}: no test possible)")


ACROSS: SuiteQuestion = SuiteQuestion(key="claims", judge=_judge, write=_write)
