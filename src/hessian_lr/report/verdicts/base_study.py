"""Which base optimizers gain from the wrapper? ``hessian-<base>`` against ``<base>`` across a suite's
workloads, and whether the gain tracks per-coordinate normalisation.

Built on each workload's ``WrapAnswer`` (the wrapping question: ``wrapped − base`` in validation loss,
paired by seed, Holm-corrected over the workload's wrapped/bare pairs), this module adds what the
suite report tabulates: per (workload, base) the final difference, its relative size (the mean
difference over the bare base's mean final loss) and ``held``'s outcome; per base how often it
gained; and the two groups of bases — those that divide each coordinate by a running scale of their
own (Adam's family, sign updates) and those that do not — side by side: how many (workload, base)
pairs gained, and the median relative change. Whether a base normalises is read from the arm's
provenance in results.json (``source["normalises"]``, which the arm declares) and otherwise from
``arms.names.normalises``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from hessian_lr.arms.names import normalises as named_normalises
from hessian_lr.report.formatting import fmt_pct_signed
from hessian_lr.report.verdicts.comparisons import Comparison, Outcome, held
from hessian_lr.report.verdicts.tally import SuiteEvidence, SuiteQuestion, Tally
from hessian_lr.report.verdicts.text import counted, names
from hessian_lr.report.verdicts.wrapping import QUESTION as WRAPPING, WrapAnswer
from hessian_lr.results import Results

__all__ = ["BaseCell", "BaseTally", "NormalisationGroup", "BaseStudy", "base_study", "ACROSS"]

_WORDS = {Outcome.BETTER: "lower", Outcome.TIE: "within noise", Outcome.WORSE: "higher",
          Outcome.UNTESTABLE: "untestable"}
_GROUP_WORDS = {True: "bases that normalise each coordinate themselves",
                False: "bases without a per-coordinate normalisation", None: "bases not classified"}


def _median_relative(cells: tuple[BaseCell, ...]) -> float | None:
    """The median of the cells' relative changes (wrapped − bare over bare), None when none has one."""
    values = [c.relative for c in cells if c.relative is not None]
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class BaseCell:
    """One base on one workload: ``final`` is ``hessian-<base> − <base>`` in final validation loss."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("outcome", "relative")

    workload: str
    base: str
    wrapped: str
    normalises: bool | None
    final: Comparison | None
    base_loss: float | None  # the bare base's mean final validation loss

    @property
    def outcome(self) -> Outcome:
        return held(self.final)

    @property
    def relative(self) -> float | None:
        """The mean difference relative to the bare base's mean final loss (−0.05: 5% lower)."""
        if self.final is None or self.final.mean_diff is None or not self.base_loss:
            return None
        return self.final.mean_diff / abs(self.base_loss)


@dataclass(frozen=True)
class BaseTally:
    """One base across the workloads."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("gains", "text")

    base: str
    wrapped: str
    normalises: bool | None
    cells: tuple[BaseCell, ...]

    @property
    def gains(self) -> tuple[str, ...]:
        """The workloads where wrapping lowered the final loss (CI below 0, surviving Holm)."""
        return tuple(c.workload for c in self.cells if c.outcome is Outcome.BETTER)

    @property
    def median_relative(self) -> float | None:
        return _median_relative(self.cells)

    @property
    def text(self) -> str:
        groups = [(o, [c.workload for c in self.cells if c.outcome is o]) for o in _WORDS]
        counts = ", ".join(f"{_WORDS[o]} on {len(ws)}" + (f" ({names(ws)})" if o is not Outcome.TIE else "")
                           for o, ws in groups if ws)
        median = self.median_relative
        change = "" if median is None else f"; median change {fmt_pct_signed(median)} of {self.base}'s final loss"
        return f"{self.wrapped} − {self.base}: {counts}{change}"


@dataclass(frozen=True)
class NormalisationGroup:
    """The (workload, base) pairs of the bases that do (``normalises`` True) or do not normalise."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("gained", "median_relative")

    normalises: bool | None
    bases: tuple[str, ...]
    cells: tuple[BaseCell, ...]

    @property
    def gained(self) -> int:
        return sum(c.outcome is Outcome.BETTER for c in self.cells)

    @property
    def median_relative(self) -> float | None:
        return _median_relative(self.cells)

    @property
    def text(self) -> str:
        median = self.median_relative
        return (f"for {_GROUP_WORDS[self.normalises]} ({names(self.bases)}), wrapping lowered the final loss on "
                f"{self.gained} of {counted(len(self.cells), '(workload, base) pair')}"
                + ("" if median is None else f" (median change {fmt_pct_signed(median)})"))


@dataclass(frozen=True)
class BaseStudy:
    """The bases question over a suite (``base_study``)."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("texts",)

    workloads: tuple[str, ...]
    tallies: tuple[BaseTally, ...]
    groups: tuple[NormalisationGroup, ...]  # normalising, not normalising, unclassified (those present)

    @property
    def texts(self) -> list[str]:
        """Which bases gain and where, then the two groups side by side."""
        gaining = [t for t in self.tallies if t.gains]
        head = (f"Which bases gain from the wrapper (final validation loss, hessian-<base> − <base>, paired by seed; a "
                f"difference counts when its 95% CI excludes 0 and it survives Holm's correction over the workload's "
                f"wrapped/bare pairs)? " + ("; ".join(f"{t.base} on {names(t.gains)}" for t in gaining)
                                            if gaining else "**None** on any workload") + ".")
        per_base = "Per base: " + "; ".join(t.text for t in self.tallies) + "."
        texts = [head, per_base]
        known = [g for g in self.groups if g.normalises is not None]
        if len(known) == 2:
            (yes, no) = sorted(known, key=lambda g: not g.normalises)
            share = {g.normalises: g.gained / len(g.cells) for g in known}
            if share[False] > share[True]:
                verdict = "gains were more frequent without per-coordinate normalisation"
            elif share[False] < share[True]:
                verdict = "gains were more frequent with per-coordinate normalisation"
            else:
                verdict = "gains were as frequent in both groups"
            texts.append(f"Does the gain track per-coordinate normalisation? F{yes.text[1:]}; {no.text} — {verdict} "
                         f"(a description of these bases and workloads, not a test).")
        else:
            missing = "without" if not any(g.normalises is False for g in known) else "with"
            texts.append(f"Does the gain track per-coordinate normalisation? **Not tested**: no base {missing} a "
                         f"per-coordinate normalisation of its own ran wrapped and bare.")
        return texts


def _normalises(results: Results, answer: WrapAnswer) -> bool | None:
    """From the arm's provenance (``source["normalises"]``), else the names table."""
    for arm in (answer.base, answer.wrapped):
        declared = (results.optimizers[arm].source or {}).get("normalises")
        if isinstance(declared, bool):
            return declared
    return named_normalises(answer.base)


def base_study(answers: Mapping[str, Sequence[WrapAnswer]], results: Mapping[str, Results]) -> BaseStudy | None:
    """The bases question across workloads.

    Args:
        answers: workload → its ``WrapAnswer`` records (the wrapping question's answers there).
        results: workload → its summarized results.

    Returns:
        The ``BaseStudy``; ``None`` when no workload ran a base both wrapped and bare.
    """
    cells = [BaseCell(workload=w, base=a.base, wrapped=a.wrapped, normalises=_normalises(results[w], a), final=a.final,
                      base_loss=results[w].optimizers[a.base].summary.get("val_loss_mean"))
             for w, records in answers.items() for a in records]
    if not cells:
        return None
    bases = list(dict.fromkeys(c.base for c in cells))
    tallies = []
    for base in bases:
        mine = tuple(c for c in cells if c.base == base)
        classified = [c.normalises for c in mine if c.normalises is not None]
        tallies.append(BaseTally(base=base, wrapped=mine[0].wrapped, normalises=classified[0] if classified else None,
                                 cells=mine))
    groups = tuple(NormalisationGroup(normalises=flag, bases=tuple(t.base for t in tallies if t.normalises is flag),
                                      cells=tuple(c for t in tallies if t.normalises is flag for c in t.cells))
                   for flag in (True, False, None) if any(t.normalises is flag for t in tallies))
    return BaseStudy(workloads=tuple(w for w, records in answers.items() if records), tallies=tuple(tallies),
                     groups=groups)


def _judge(evidence: SuiteEvidence) -> BaseStudy | None:
    return base_study({w: q.of(WRAPPING.key) for w, q in evidence.questions.items()}, evidence.results)


def _write(record: BaseStudy | None, evidence: SuiteEvidence, tally: Tally) -> None:
    """The head sentence (which bases gain, where) and the normalisation comparison; the wrapping
    question already wrote each base's effects and filed them as supported or not."""
    if record is not None:
        texts = record.texts
        tally.overall += [texts[0], texts[2]]


ACROSS = SuiteQuestion(key="base_study", judge=_judge, write=_write)
