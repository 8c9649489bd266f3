"""The questions asked of every workload, and how one is added.

A question is a module holding a ``Question``: its ``key``, how it is asked of one workload's results
(``ask``: a tuple of answer records), the workload's one ``Answer`` from those records, and its
paragraphs for the report. ``registry.WORKLOAD_QUESTIONS`` lists the questions asked, in the order
the reports show them; ``Questions`` holds one workload's answers to all of them. A question that
is also answered across the workloads of a suite registers a ``tally.SuiteQuestion`` too.

In every question a difference counts only when its paired 95% CI excludes 0 and it survives Holm's
correction over the comparisons of that question on that workload (``comparisons.held``; Holm 1979).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hessian_lr.report.verdicts.fidelity import EstimatorFidelity, fidelity_records
from hessian_lr.results import Results

__all__ = ["Answer", "combined", "Question", "Questions", "ask"]


class Answer(str, Enum):
    """The answer to one of the write-up's questions on one workload."""

    YES = "yes"
    NO = "no"
    UNTESTABLE = "untestable"  # the arms ran, but a difference had no CI (one seed)
    NOT_TESTED = "not tested"  # the arms the question needs did not run


def combined(answers: Sequence[Answer]) -> Answer:
    """Several answers on one workload (one per base, say): yes if any is, untestable if all are, not
    tested if there are none, else no."""
    if not answers:
        return Answer.NOT_TESTED
    if Answer.YES in answers:
        return Answer.YES
    return Answer.UNTESTABLE if all(a is Answer.UNTESTABLE for a in answers) else Answer.NO


@dataclass(frozen=True)
class Question:
    """A question asked of each workload's summarized results.

    ``key`` names its answers in ``Questions`` and in suite.json (with ``<key>_answer`` for the
    workload's one answer); ``ask(results, fidelity)`` returns its answer records (empty: the arms it
    needs did not run); ``answer(records)`` combines them; ``texts(questions)`` writes its paragraphs
    on the workload from every answer there (``questions.of(key)``, ``questions.fidelity``).
    """

    key: str
    ask: Callable[[Results, tuple[EstimatorFidelity, ...]], tuple[Any, ...]]
    answer: Callable[[tuple[Any, ...]], Answer]
    texts: Callable[[Questions], list[str]]


@dataclass(frozen=True)
class Questions:
    """One workload's answers to the questions ``asked`` (``key`` → answer records), beside the
    estimators' measured fidelity on it."""

    workload: str
    asked: tuple[Question, ...]
    answers: Mapping[str, tuple[Any, ...]]
    fidelity: tuple[EstimatorFidelity, ...] = ()

    def of(self, key: str) -> tuple[Any, ...]:
        """The answer records of the question ``key`` (empty when it was not asked)."""
        return tuple(self.answers.get(key, ()))

    def answer(self, key: str) -> Answer:
        """The question ``key``'s one answer on this workload."""
        question = next(q for q in self.asked if q.key == key)
        return question.answer(self.of(key))

    @property
    def texts(self) -> list[str]:
        """The paragraphs of every question, in the order asked."""
        return [text for question in self.asked for text in question.texts(self)]

    def verdict_items(self) -> dict[str, Any]:
        """What suite.json records (``data.verdict_data``): the workload, each question's records, the
        fidelity, each question's answer and the paragraphs."""
        return {"workload": self.workload, **{q.key: self.of(q.key) for q in self.asked}, "fidelity": self.fidelity,
                **{f"{q.key}_answer": self.answer(q.key) for q in self.asked}, "texts": self.texts}


def ask(results: Results, fidelity: Mapping[str, Any] | None, asked: Sequence[Question]) -> Questions:
    """Ask ``asked`` of one workload.

    Args:
        results: the workload's summarized results.
        fidelity: its ``fidelity.json`` (``None``: not measured).
        asked: the questions, in the order their paragraphs are shown.

    Returns:
        The ``Questions``.
    """
    records = fidelity_records(fidelity)
    return Questions(workload=str(results.config.get("workload")), asked=tuple(asked),
                     answers={q.key: tuple(q.ask(results, records)) for q in asked}, fidelity=records)
