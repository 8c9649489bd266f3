"""The suite's verdicts: every workload judged as compare's report judges it, then the registered
suite questions (``registry.SUITE_QUESTIONS``) answered across the workloads, and the generated
conclusion (per workload, overall, supported / not supported / not tested)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hessian_lr.protocols import WRITE_UP, WriteUp
from hessian_lr.report.profiles import PerformanceProfiles
from hessian_lr.report.verdicts.claims import ClaimAcrossWorkloads, workload_paragraph
from hessian_lr.report.verdicts.registry import SUITE_QUESTIONS
from hessian_lr.report.verdicts.standings import ProfileStanding
from hessian_lr.report.verdicts.tally import SuiteEvidence, Tally
from hessian_lr.report.verdicts.win_tie_loss import WinTieLoss
from hessian_lr.report.verdicts.workload import WorkloadVerdicts, workload_verdicts
from hessian_lr.results import Results

__all__ = ["SuiteConclusion", "SuiteVerdicts", "suite_verdicts"]

CAVEAT = ("Each workload is judged on its own paired seeds. A win or loss, and the write-up's claim, count a 95% CI "
          "alone (as compare's report does); the two questions count a difference only when it also survives Holm's "
          "correction over that question's comparisons on that workload. Counts over a handful of workloads describe "
          "these workloads; they are not a test over workloads.")


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
    """Every verdict of the suite report (``suite_verdicts``); ``answers`` holds each suite
    question's record by key (``claims``, ``win_tie_loss`` and ``standings`` also by name)."""

    baseline: str
    workloads: dict[str, WorkloadVerdicts]
    win_tie_loss: WinTieLoss
    claims: tuple[ClaimAcrossWorkloads, ...]
    standings: dict[str, tuple[ProfileStanding, ...]]  # clock → ranked arms
    conclusion: SuiteConclusion
    answers: dict[str, Any] = field(default_factory=dict)


def _workload_paragraphs(verdicts: WorkloadVerdicts) -> tuple[str, ...]:
    return (workload_paragraph(verdicts.reproduction, verdicts.write_up), *verdicts.questions.texts)


def suite_verdicts(results_by_workload: Mapping[str, Results], profiles: Mapping[str, PerformanceProfiles],
                   fidelity_by_workload: Mapping[str, Mapping[str, Any] | None] | None = None,
                   write_up: WriteUp = WRITE_UP) -> SuiteVerdicts:
    """Judge a suite: every workload as compare's report does, and the write-up's claim and the
    registered questions across the workloads.

    Args:
        results_by_workload: workload → its summarized results (the same baseline, the first arm, on
            every workload).
        profiles: clock (``"steps"``, ``"wall_s"``) → ``profiles.performance_profiles`` over the
            workloads (Dahl et al. 2023, arXiv:2306.07179).
        fidelity_by_workload: workload → its ``fidelity.json`` (missing or ``None``: not measured).
        write_up: the write-up whose claims are reproduced (default: ``protocols.WRITE_UP``).

    Returns:
        The ``SuiteVerdicts``; its conclusion says per workload and overall what the data support,
        what they do not, and what the suite did not test.

    Raises:
        ValueError: no workloads, or workloads compared against different baselines.
    """
    fidelity_by_workload = fidelity_by_workload or {}
    verdicts = {w: workload_verdicts(r, fidelity=fidelity_by_workload.get(w), write_up=write_up)
                for w, r in results_by_workload.items()}
    evidence = SuiteEvidence(results=results_by_workload, verdicts=verdicts, profiles=profiles,
                             fidelity=fidelity_by_workload, write_up=write_up)
    answers = {question.key: question.judge(evidence) for question in SUITE_QUESTIONS}
    tally = Tally()
    for question in SUITE_QUESTIONS:
        question.write(answers[question.key], evidence, tally)
    tally.overall.append(CAVEAT)
    conclusion = SuiteConclusion(per_workload={w: _workload_paragraphs(v) for w, v in verdicts.items()},
                                 overall=tuple(tally.overall), supported=tuple(tally.supported),
                                 not_supported=tuple(tally.not_supported), not_tested=tuple(tally.not_tested))
    table = answers["win_tie_loss"]
    return SuiteVerdicts(baseline=table.baseline, workloads=verdicts, win_tie_loss=table, claims=answers["claims"],
                         standings=answers["standings"], conclusion=conclusion, answers=answers)
