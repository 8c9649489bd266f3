"""Every verdict of one workload's report, assembled: ``workload_verdicts(results)``.

The pairwise differences (``comparisons``), the equal-lr ablation, the order of the tuned lrs, the
write-up's claims (``claims``), the conclusion (``conclusion``), the registered questions
(``questions``, ``registry.WORKLOAD_QUESTIONS``) and, with repeated studies, the tuning luck
(``tuning_luck``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hessian_lr.protocols import WRITE_UP, WriteUp
from hessian_lr.report.spaces import arm_space, dimension_text, lr_arms
from hessian_lr.report.summary import seed_runs
from hessian_lr.report.verdicts.claims import Reproduction, reproduce
from hessian_lr.report.verdicts.comparisons import Comparison, comparisons_of, find
from hessian_lr.report.verdicts.conclusion import Conclusion, conclude
from hessian_lr.report.verdicts.questions import Question, Questions, ask
from hessian_lr.report.verdicts.registry import WORKLOAD_QUESTIONS
from hessian_lr.report.verdicts.tuning_luck import TuningLuck, tuning_luck
from hessian_lr.results import Results

__all__ = ["WorkloadVerdicts", "workload_verdicts", "lr_order"]


def lr_order(results: Results) -> str | None:
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
    write_up: WriteUp = WRITE_UP  # the write-up whose claims ``reproduction`` judges

    def comparison(self, arm: str, metric: str, epoch: int) -> Comparison | None:
        """The difference ``arm − baseline`` in ``metric`` at ``epoch``, if it was computed."""
        return find(self.comparisons, arm, metric, epoch)


def workload_verdicts(results: Results, fidelity: Mapping[str, Any] | None = None, write_up: WriteUp = WRITE_UP,
                      questions: Sequence[Question] = WORKLOAD_QUESTIONS) -> WorkloadVerdicts:
    """Judge one workload's summarized results.

    Args:
        results: results that ``summary.summarize`` has filled (``extra["pairwise"]`` and, when the
            ablation ran, ``extra["ablation"]``); they are only read.
        fidelity: the workload's ``fidelity.json`` for the estimator question; by default
            ``results.extra["fidelity"]`` (what ``attach_fidelity`` copied in), if any.
        write_up: the write-up whose claims are reproduced (default: the original one,
            ``protocols.WRITE_UP``).
        questions: the questions asked (default: every registered one).

    Returns:
        The ``WorkloadVerdicts``.

    Raises:
        ValueError: the results were not summarized.
    """
    comparisons = comparisons_of(results)
    equal_lr = tuple(Comparison.from_row(r) for r in (results.extra.get("ablation") or {}).get("equal_lr") or [])
    seeds = max(len(seed_runs(r.final)) for r in results.optimizers.values())
    return WorkloadVerdicts(
        workload=str(results.config.get("workload")), baseline=results.extra["pairwise"]["baseline"], seeds=seeds,
        comparisons=comparisons, equal_lr=equal_lr, lr_order=lr_order(results),
        reproduction=reproduce(results, comparisons, write_up),
        conclusion=conclude(results, comparisons, equal_lr, seeds),
        questions=ask(results, fidelity if fidelity is not None else results.extra.get("fidelity"), questions),
        tuning_luck=tuning_luck(results, comparisons), write_up=write_up)
