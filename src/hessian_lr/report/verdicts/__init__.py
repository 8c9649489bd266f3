"""Every verdict of a report, computed as data: which differences are real, which of the original
write-up's claims hold, what the conclusion says, what the write-up's questions get for an answer.
``document.py`` (and through it ``report.md`` and ``report.html``) and the suite report only lay
these records out; no comparative sentence is written anywhere else.

One module per question or concern, each readable alone:

- ``comparisons``: ``Comparison`` (a paired difference ``arm − baseline``), its ``Outcome``,
  ``held`` (the outcome a question counts), ``final_comparisons``;
- ``claims``: a write-up's claims (``protocols.WriteUp``) judged on one workload
  (``Reproduction``) and tallied over a suite's (``claims_across_workloads``);
- ``conclusion``: one workload's per-arm findings and what is and is not supported;
- ``questions``: the interface of a question asked of every workload (``Question``) and one
  workload's answers (``Questions``); ``estimators`` and ``wrapping`` are the write-up's two
  (would better curvature estimators, would other base optimizers change the answer?), beside
  ``fidelity`` (how faithfully each estimator tracks the exact diagonal);
- ``tuning_luck``: with repeated studies, each arm's study-to-study spread;
- ``workload``: all of one workload's verdicts (``workload_verdicts``);
- ``win_tie_loss``, ``standings``: across workloads, win / tie / loss against the baseline and the
  performance-profile ranking (AlgoPerf, Dahl et al. 2023, arXiv:2306.07179);
- ``estimator_study``, ``base_study``, ``beats_adam``: the write-up's questions answered across a
  suite — which estimator, and does an estimate's fidelity predict how it trains (a pooled rank
  correlation with a permutation test); which base optimizers gain and whether that tracks
  per-coordinate normalisation; which arms beat a tuned Adam on at least two workloads;
- ``tally``: the interface of a question answered across a suite (``SuiteQuestion``);
  ``suite``: ``suite_verdicts`` and the generated ``SuiteConclusion``;
- ``registry``: the questions asked, in order: adding a question is adding a module and one line
  there;
- ``data``: ``verdict_data`` turns any record into JSON for suite.json; ``text``: shared wording.

The baseline is the first arm named (``summary.baseline_arm``). The rule throughout: a difference
is real when the two-sided 95% t interval of the paired (same seed) difference excludes 0; a claim
against the baseline must also survive Holm's correction over the arms compared at that epoch (Holm
1979). A single seed gives no interval, so no claim. Texts carry the report's inline markup:
``**bold**`` and ```code```.
"""

from __future__ import annotations

from hessian_lr.report.verdicts.claims import (Claim, ClaimAcrossWorkloads, ClaimStatus, Reproduction,
                                               claims_across_workloads, judge_claim)
from hessian_lr.report.verdicts.comparisons import (ALPHA, Comparison, Outcome, difference_text, direction,
                                                    final_comparisons, held)
from hessian_lr.report.verdicts.conclusion import ArmConclusion, Conclusion, Finding
from hessian_lr.report.verdicts.data import verdict_data
from hessian_lr.report.verdicts.estimators import EstimatorAnswer
from hessian_lr.report.verdicts.fidelity import EstimatorFidelity, fidelity_records
from hessian_lr.report.verdicts.questions import Answer, Question, Questions
from hessian_lr.report.verdicts.registry import SUITE_QUESTIONS, WORKLOAD_QUESTIONS
from hessian_lr.report.verdicts.standings import ProfileStanding, profile_standings
from hessian_lr.report.verdicts.suite import SuiteConclusion, SuiteVerdicts, suite_verdicts
from hessian_lr.report.verdicts.tally import SuiteEvidence, SuiteQuestion, Tally
from hessian_lr.report.verdicts.tuning_luck import TuningLuck
from hessian_lr.report.verdicts.win_tie_loss import WinTieLoss, WinTieLossCell, WinTieLossCount, win_tie_loss
from hessian_lr.report.verdicts.workload import WorkloadVerdicts, workload_verdicts
from hessian_lr.report.verdicts.wrapping import Effect, WrapAnswer

__all__ = ["ALPHA", "Outcome", "ClaimStatus", "Comparison", "Claim", "Reproduction", "Finding", "ArmConclusion",
           "Conclusion", "WorkloadVerdicts", "WinTieLossCell", "WinTieLossCount", "WinTieLoss", "ClaimAcrossWorkloads",
           "ProfileStanding", "direction", "difference_text", "judge_claim", "workload_verdicts", "final_comparisons",
           "win_tie_loss", "claims_across_workloads", "profile_standings", "Answer", "Effect", "held",
           "EstimatorFidelity", "fidelity_records", "EstimatorAnswer", "WrapAnswer", "Question", "Questions",
           "TuningLuck", "SuiteConclusion", "SuiteVerdicts", "suite_verdicts", "SuiteQuestion", "SuiteEvidence",
           "Tally", "WORKLOAD_QUESTIONS", "SUITE_QUESTIONS", "verdict_data"]
