"""The questions the reports ask, in the order they show them. A new question is a module of this
package holding a ``questions.Question`` (asked of each workload) and/or a ``tally.SuiteQuestion``
(answered across a suite's workloads), plus one line here.

``claims``, ``standings`` and ``win_tie_loss`` are always answered (``SuiteVerdicts`` exposes their
records by name); the suite conclusion's paragraphs follow ``SUITE_QUESTIONS``' order.
"""

from __future__ import annotations

from hessian_lr.report.verdicts import (base_study, beats_adam, claims, estimator_study, estimators, standings,
                                        win_tie_loss, wrapping)
from hessian_lr.report.verdicts.questions import Question
from hessian_lr.report.verdicts.tally import SuiteQuestion

__all__ = ["WORKLOAD_QUESTIONS", "SUITE_QUESTIONS"]

WORKLOAD_QUESTIONS: tuple[Question, ...] = (
    estimators.QUESTION,  # would better curvature estimators change the answer?
    wrapping.QUESTION,  # would other base optimizers?
)

SUITE_QUESTIONS: tuple[SuiteQuestion, ...] = (
    claims.ACROSS,  # the write-up's claims over the workloads
    estimators.ACROSS,
    estimator_study.ACROSS,  # which estimator, and does fidelity predict training?
    wrapping.ACROSS,
    base_study.ACROSS,  # which bases gain, and does the gain track normalisation?
    beats_adam.ACROSS,  # does anything beat a tuned Adam?
    standings.ACROSS,  # performance profiles
    win_tie_loss.ACROSS,
)
