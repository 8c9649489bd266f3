"""Win / tie / loss of every arm against the baseline over a suite's workloads, by the final
validation loss's paired 95% CI; it sits beside the performance profiles (``standings``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from hessian_lr.report.verdicts.comparisons import Comparison, Outcome, final_comparisons
from hessian_lr.report.verdicts.tally import SuiteEvidence, SuiteQuestion, Tally
from hessian_lr.results import Results

__all__ = ["WinTieLossCell", "WinTieLossCount", "WinTieLoss", "win_tie_loss", "ACROSS"]


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


def _judge(evidence: SuiteEvidence) -> WinTieLoss:
    return win_tie_loss(evidence.results)


def _write(table: WinTieLoss, evidence: SuiteEvidence, tally: Tally) -> None:
    counts = "; ".join(f"{arm}: {count.text}" for arm, count in table.counts.items())
    tally.overall.append(f"Final validation loss against {table.baseline} (a win or loss: the paired 95% CI "
                         f"excludes 0): {counts}.")


ACROSS = SuiteQuestion(key="win_tie_loss", judge=_judge, write=_write)
