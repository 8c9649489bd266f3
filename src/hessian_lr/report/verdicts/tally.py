"""The suite's questions across workloads, and how one is added.

A suite question is a ``SuiteQuestion``: ``judge`` computes its record from the ``SuiteEvidence``
(every workload's results and verdicts, the performance profiles, the fidelity, the write-up);
``write`` adds its paragraphs to the suite conclusion's ``Tally`` and files what it found under
statistically supported, not supported, or not tested. ``registry.SUITE_QUESTIONS`` lists them in
the order the conclusion's paragraphs follow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from hessian_lr.protocols import WriteUp
from hessian_lr.report.profiles import PerformanceProfiles
from hessian_lr.results import Results

if TYPE_CHECKING:
    from hessian_lr.report.verdicts.questions import Questions
    from hessian_lr.report.verdicts.workload import WorkloadVerdicts

__all__ = ["Tally", "by_value", "SuiteEvidence", "SuiteQuestion"]


@dataclass
class Tally:
    """The overall paragraphs being written, with their supported / not supported / not tested items."""

    overall: list[str] = field(default_factory=list)
    supported: list[str] = field(default_factory=list)
    not_supported: list[str] = field(default_factory=list)
    not_tested: list[str] = field(default_factory=list)


def by_value(statuses: Mapping[str, Enum], order: Sequence[Enum]) -> list[tuple[Enum, list[str]]]:
    """``[(value, [workloads with it])]`` in ``order``, values nobody has left out."""
    return [(v, ws) for v in order if (ws := [w for w, s in statuses.items() if s is v])]


@dataclass(frozen=True)
class SuiteEvidence:
    """Everything a suite question may read: per workload its summarized ``results``, its
    ``verdicts`` and its ``fidelity.json`` (missing: not measured); per clock the performance
    ``profiles``; the ``write_up`` whose claims are reproduced."""

    results: Mapping[str, Results]
    verdicts: Mapping[str, WorkloadVerdicts]
    profiles: Mapping[str, PerformanceProfiles]
    fidelity: Mapping[str, Mapping[str, Any] | None]
    write_up: WriteUp

    @property
    def questions(self) -> dict[str, Questions]:
        """Workload → its answers to the per-workload questions."""
        return {w: v.questions for w, v in self.verdicts.items()}


def _nothing(evidence: SuiteEvidence) -> None:
    return None


@dataclass(frozen=True)
class SuiteQuestion:
    """A question answered across the suite's workloads.

    ``key`` names its record in ``SuiteVerdicts.answers``; ``judge(evidence)`` computes the record
    (by default none: the question only writes, from the per-workload answers); ``write(record,
    evidence, tally)`` adds its overall paragraphs and items to ``tally``.
    """

    key: str
    write: Callable[[Any, SuiteEvidence, Tally], None]
    judge: Callable[[SuiteEvidence], Any] = _nothing
