"""Does anything beat a tuned Adam? Every arm's final validation loss against ``adam``'s on every
workload where both ran, for any suite (not only the question presets).

On each workload the differences ``arm − adam`` (paired by seed) of all the other arms form one
family, Holm-corrected together (the suite's pairwise rows when ``adam`` is the baseline, else the
same computation with ``adam`` as the reference). An arm *beats* adam on a workload when the paired
95% CI lies below 0 and the difference survives Holm's correction (``held`` is better); it beats a
tuned Adam when that happens on at least ``MIN_WORKLOADS`` workloads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from hessian_lr.report.summary import paired_rows
from hessian_lr.report.verdicts.comparisons import Comparison, Outcome, final_comparisons, held
from hessian_lr.report.verdicts.tally import SuiteEvidence, SuiteQuestion, Tally
from hessian_lr.report.verdicts.text import counted, names
from hessian_lr.results import Results

__all__ = ["REFERENCE", "MIN_WORKLOADS", "ArmAgainstAdam", "BeatsAdam", "beats_adam", "ACROSS"]

REFERENCE = "adam"
MIN_WORKLOADS = 2


@dataclass(frozen=True)
class ArmAgainstAdam:
    """One arm's final ``arm − adam`` on each workload where both ran, and what ``held`` makes of it."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("outcomes", "wins", "losses")

    arm: str
    comparisons: dict[str, Comparison]  # workload → arm − adam

    @property
    def outcomes(self) -> dict[str, Outcome]:
        return {w: held(c) for w, c in self.comparisons.items()}

    @property
    def wins(self) -> tuple[str, ...]:
        """The workloads where it beat adam (CI below 0, surviving Holm)."""
        return tuple(w for w, o in self.outcomes.items() if o is Outcome.BETTER)

    @property
    def losses(self) -> tuple[str, ...]:
        return tuple(w for w, o in self.outcomes.items() if o is Outcome.WORSE)


@dataclass(frozen=True)
class BeatsAdam:
    """``beats_adam``'s record: every arm against adam, and those that beat it on enough workloads."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("winners", "untestable", "text")

    reference: str
    workloads: tuple[str, ...]  # where adam ran
    arms: tuple[ArmAgainstAdam, ...]

    @property
    def winners(self) -> tuple[str, ...]:
        return tuple(a.arm for a in self.arms if len(a.wins) >= MIN_WORKLOADS)

    @property
    def untestable(self) -> bool:
        """No difference from adam had a confidence interval (a single seed everywhere)."""
        return all(o is Outcome.UNTESTABLE for a in self.arms for o in a.outcomes.values())

    @property
    def text(self) -> str:
        rule = (f"final validation loss below {self.reference}'s with the paired 95% CI excluding 0 after Holm's "
                f"correction over the arms on that workload, on at least {MIN_WORKLOADS} workloads")
        if not self.workloads:
            return f"Does anything beat a tuned {self.reference}? **Not tested**: {self.reference} did not run."
        if not self.arms:
            return f"Does anything beat a tuned {self.reference}? **Not tested**: no other arm ran beside it."
        if self.untestable:
            return (f"Does anything beat a tuned {self.reference}? **Untestable**: one seed per arm gives no "
                    "confidence interval.")
        if not self.winners:
            best = max(self.arms, key=lambda a: len(a.wins))
            most = (f"; the most any arm managed is {counted(len(best.wins), 'workload')} ({best.arm}: "
                    f"{names(best.wins)})" if best.wins else "; none beat it on any workload")
            return (f"Does anything beat a tuned {self.reference} ({rule})? **No arm does**, over "
                    f"{counted(len(self.workloads), 'workload')} and {counted(len(self.arms), 'other arm')}{most}.")
        parts = [f"{a.arm} on {len(a.wins)} ({names(a.wins)})" for a in self.arms if a.arm in self.winners]
        return (f"Does anything beat a tuned {self.reference} ({rule})? **Yes**: " + "; ".join(parts)
                + f" — of {counted(len(self.arms), 'other arm')} over {counted(len(self.workloads), 'workload')}.")


def _against_reference(results: Results) -> list[Comparison]:
    """``arm − adam`` in final validation loss for every other arm, Holm over them."""
    if results.extra["pairwise"]["baseline"] == REFERENCE:
        return final_comparisons(results)
    epochs = int(results.config["epochs"])
    pairs = [(arm, REFERENCE) for arm in results.optimizers if arm != REFERENCE]
    return [Comparison.from_row(row) for row in paired_rows(results, pairs, "val_loss", epochs)]


def beats_adam(results_by_workload: Mapping[str, Results]) -> BeatsAdam:
    """Every arm against ``adam`` on every workload where both ran.

    Args:
        results_by_workload: workload → its summarized results.

    Returns:
        The ``BeatsAdam`` record (arms in the order they first appear).
    """
    found: dict[str, dict[str, Comparison]] = {}
    workloads = []
    for workload, results in results_by_workload.items():
        if REFERENCE not in results.optimizers:
            continue
        workloads.append(workload)
        for c in _against_reference(results):
            found.setdefault(c.arm, {})[workload] = c
    return BeatsAdam(reference=REFERENCE, workloads=tuple(workloads),
                     arms=tuple(ArmAgainstAdam(arm=arm, comparisons=mine) for arm, mine in found.items()))


def _judge(evidence: SuiteEvidence) -> BeatsAdam:
    return beats_adam(evidence.results)


def _write(record: BeatsAdam, evidence: SuiteEvidence, tally: Tally) -> None:
    tally.overall.append(record.text)
    if not record.workloads or not record.arms:
        tally.not_tested.append(f"whether any arm beats a tuned {record.reference} ({record.reference} and another "
                                "arm did not both run)")
        return
    if record.untestable:
        tally.not_tested.append(f"whether any arm beats a tuned {record.reference} (one seed: no test possible)")
        return
    for arm in record.arms:
        if arm.arm in record.winners:
            tally.supported.append(f"{arm.arm} beats a tuned {record.reference} on {names(arm.wins)}")
    if not record.winners:
        tally.not_supported.append(f"that any arm beats a tuned {record.reference} on {MIN_WORKLOADS} or more "
                                   "workloads")


ACROSS = SuiteQuestion(key="beats_adam", judge=_judge, write=_write)
