"""The write-up's first question: would better curvature estimators change the answer?

Per workload and base optimizer, each ``hessian-<base>-<estimator>`` arm is set against
``hessian-<base>`` (the write-up's grad-diff estimator) and against ``<base>``, beside
``analysis.fidelity``'s measure of how well each estimator tracks the exact diagonal
(``EstimatorAnswer``); across the suite, the (workload, base) pairs are tallied by answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hessian_lr.arms.names import REFERENCE_ESTIMATOR, estimator_arms, wrapped_name
from hessian_lr.report.summary import paired_rows
from hessian_lr.report.verdicts.comparisons import Comparison, Outcome, held, short_text
from hessian_lr.report.verdicts.fidelity import EstimatorFidelity, fidelity_text
from hessian_lr.report.verdicts.questions import Answer, Question, Questions, combined
from hessian_lr.report.verdicts.tally import SuiteEvidence, SuiteQuestion, Tally, by_value
from hessian_lr.report.verdicts.text import names
from hessian_lr.results import Results

__all__ = ["EstimatorAnswer", "ask", "texts", "QUESTION", "ACROSS"]

_RANK = {Outcome.WORSE: 0, Outcome.TIE: 1, Outcome.BETTER: 2}


def _word(c: Comparison | None) -> str:
    outcome = held(c)
    if outcome is Outcome.UNTESTABLE:
        return "single seed: no test" if c is not None and c.mean_diff is not None else "not computed"
    if outcome is Outcome.TIE:
        return "within noise" + ("" if c.outcome is Outcome.TIE else " after Holm's correction")
    return outcome.value


@dataclass(frozen=True)
class EstimatorAnswer:
    """Would a better curvature estimator change the answer? One workload, one base optimizer.

    ``reference`` is ``hessian-<base>`` (grad-diff); ``estimators`` maps each
    ``hessian-<base>-<estimator>`` arm to its estimator. ``vs_base``: the reference's and each
    estimator arm's final validation loss − the base's (Holm over them); ``vs_reference``: each
    estimator arm's − the reference's (Holm over the estimator arms). The answer is yes when an
    estimator arm does better against the base than grad-diff does (better where grad-diff ties
    or loses, or a tie where it loses).
    """

    EXPORTED: ClassVar[tuple[str, ...]] = ("answer", "changed_by", "better_than_reference", "worse_than_reference",
                                           "more_faithful", "fidelity_only", "text")

    workload: str
    base: str
    reference: str
    estimators: dict[str, str]
    vs_base: tuple[Comparison, ...]
    vs_reference: tuple[Comparison, ...]
    fidelity: tuple[EstimatorFidelity, ...] = ()

    def against_base(self, arm: str) -> Comparison | None:
        return next((c for c in self.vs_base if c.arm == arm), None)

    def against_reference(self, arm: str) -> Comparison | None:
        return next((c for c in self.vs_reference if c.arm == arm), None)

    @property
    def answer(self) -> Answer:
        if any(held(c) is Outcome.UNTESTABLE for c in self.vs_base):
            return Answer.UNTESTABLE
        return Answer.YES if self.changed_by else Answer.NO

    @property
    def changed_by(self) -> tuple[str, ...]:
        """The estimator arms whose verdict against the base ranks above grad-diff's."""
        reference = held(self.against_base(self.reference))
        if reference is Outcome.UNTESTABLE:
            return ()
        return tuple(arm for arm in self.estimators if (o := held(self.against_base(arm))) is not Outcome.UNTESTABLE
                     and _RANK[o] > _RANK[reference])

    @property
    def better_than_reference(self) -> tuple[str, ...]:
        return tuple(a for a in self.estimators if held(self.against_reference(a)) is Outcome.BETTER)

    @property
    def worse_than_reference(self) -> tuple[str, ...]:
        return tuple(a for a in self.estimators if held(self.against_reference(a)) is Outcome.WORSE)

    def fidelity_of(self, estimator: str) -> EstimatorFidelity | None:
        return next((f for f in self.fidelity if f.estimator == estimator), None)

    @property
    def more_faithful(self) -> tuple[str, ...]:
        """The estimator arms whose estimator ranks the parameters more like the exact diagonal than
        grad-diff at the last checkpoint (Spearman); empty without fidelity for both."""
        reference = self.fidelity_of(REFERENCE_ESTIMATOR)
        if reference is None or reference.spearman[1] is None:
            return ()
        return tuple(arm for arm, estimator in self.estimators.items()
                     if (f := self.fidelity_of(estimator)) is not None and f.spearman[1] is not None
                     and f.spearman[1] > reference.spearman[1])

    @property
    def fidelity_only(self) -> tuple[str, ...]:
        """Estimators whose fidelity was measured but that no ``hessian-<base>-<estimator>`` arm trained."""
        trained = {REFERENCE_ESTIMATOR, *self.estimators.values()}
        return tuple(f.estimator for f in self.fidelity if f.estimator not in trained)

    @property
    def text(self) -> str:
        """The per-workload paragraph on this base's estimators."""
        rows = "; ".join(f"{arm} ({'grad-diff' if arm == self.reference else self.estimators[arm]}) "
                         f"{short_text(self.against_base(arm))}, {_word(self.against_base(arm))}"
                         for arm in (self.reference, *self.estimators))
        direct = "; ".join(f"{arm} {short_text(self.against_reference(arm))}, {_word(self.against_reference(arm))}"
                           for arm in self.estimators)
        if self.answer is Answer.UNTESTABLE:
            verdict = "single seed: whether an estimator changes the answer cannot be tested"
        elif self.answer is Answer.YES:
            verdict = (f"**a different estimator changes the answer here**: {names(self.changed_by)} did better "
                       f"against {self.base} than grad-diff")
        else:
            verdict = f"**the answer does not change**: no estimator did better against {self.base} than grad-diff"
        text = (f"Estimators around {self.base}, final validation loss − {self.base}: {rows}. Against grad-diff "
                f"({self.reference}): {direct}. So {verdict}.")
        if self.fidelity:
            faithful = self.more_faithful
            text += f" Fidelity {fidelity_text(self.fidelity)}."
            if faithful:
                text += (f" More faithful than grad-diff: {names(faithful)}; of those, better than grad-diff in "
                         f"training: {names([a for a in faithful if a in self.better_than_reference])}.")
            if self.fidelity_only:
                text += f" Measured for fidelity but not trained around {self.base}: {names(self.fidelity_only)}."
        else:
            text += " Fidelity was not measured on this workload."
        return text


def ask(results: Results, fidelity: tuple[EstimatorFidelity, ...]) -> tuple[EstimatorAnswer, ...]:
    """One ``EstimatorAnswer`` per base that ran plain, wrapped with grad-diff and with another estimator."""
    arms = list(results.optimizers)
    epochs = int(results.config["epochs"])
    name = str(results.config.get("workload"))
    answers = []
    for base in arms:
        reference, variants = wrapped_name(base), estimator_arms(arms, base)
        if reference not in arms or not variants:
            continue
        vs_base = paired_rows(results, [(a, base) for a in (reference, *variants)], "val_loss", epochs)
        vs_reference = paired_rows(results, [(a, reference) for a in variants], "val_loss", epochs)
        answers.append(EstimatorAnswer(
            workload=name, base=base, reference=reference, estimators=variants,
            vs_base=tuple(map(Comparison.from_row, vs_base)),
            vs_reference=tuple(map(Comparison.from_row, vs_reference)),
            fidelity=fidelity))
    return tuple(answers)


def _answer(answers: Sequence[EstimatorAnswer]) -> Answer:
    return combined([a.answer for a in answers])


def texts(questions: Questions) -> list[str]:
    """A paragraph per base, or that the question was not tested here (with the fidelity alone)."""
    answers = questions.of(QUESTION.key)
    if answers:
        return [a.text for a in answers]
    return ["Better estimators: **not tested** here (no `hessian-<base>-<estimator>` arm ran beside "
            "`hessian-<base>` and `<base>`)."
            + (" Fidelity alone, which does not say whether training improves: "
               f"{fidelity_text(questions.fidelity)}." if questions.fidelity else "")]


QUESTION = Question(key="estimators", ask=ask, answer=_answer, texts=texts)


def _write(record: Any, evidence: SuiteEvidence, tally: Tally) -> None:
    """The (workload, base) pairs by answer, and how the more faithful estimators trained."""
    questions: Mapping[str, Questions] = evidence.questions
    answers = [(w, a) for w, q in questions.items() for a in q.of(QUESTION.key)]
    untested = [w for w, q in questions.items() if not q.of(QUESTION.key)]
    if not answers:
        text = ("Would better curvature estimators change the answer? **Not tested**: no workload ran a "
                "`hessian-<base>-<estimator>` arm beside `hessian-<base>` and `<base>`, so the suite cannot say.")
        measured = {w: q.fidelity for w, q in questions.items() if q.fidelity}
        if measured:
            text += (" Fidelity alone (how closely each estimator tracks the exact Hessian diagonal, not whether "
                     "training improves): " + "; ".join(f"{w}: {fidelity_text(f)}" for w, f in measured.items()) + ".")
        tally.overall.append(text)
        tally.not_tested.append("whether a better curvature estimator changes the answer (no estimator arms ran)")
        return

    def case(w: str, a: EstimatorAnswer) -> str:
        changed = f": {names(a.changed_by)} did better against {a.base} than grad-diff" if a.changed_by else ""
        return f"{w} ({a.base}{changed})"

    by_answer = {case(w, a): a.answer for w, a in answers}
    parts = [f"{answer.value} on {names(ws)}" for answer, ws in by_value(by_answer, list(Answer))]
    text = ("Would better curvature estimators change the answer? Over the (workload, base optimizer) pairs that "
            "test it: " + "; ".join(parts))
    if untested:
        text += f"; not tested on {names(untested)}"
    faithful = [(w, a, arm) for w, a in answers for arm in a.more_faithful]
    if faithful:
        better = sum(arm in a.better_than_reference for _, a, arm in faithful)
        worse = sum(arm in a.worse_than_reference for _, a, arm in faithful)
        cases = f"{len(faithful)} (workload, estimator) case{'' if len(faithful) == 1 else 's'}"
        text += (f". Of {cases} where the estimator tracked the exact diagonal"
                 f" more closely than grad-diff at the end of training (Spearman), it reached a lower final "
                 f"validation loss than grad-diff in {better}, a higher one in {worse}, and one within noise in "
                 f"{len(faithful) - better - worse}")
    no_fidelity = sorted({w for w, a in answers if not a.fidelity})
    if no_fidelity:
        text += f"; fidelity not measured on {names(no_fidelity)}"
    tally.overall.append(text + ".")
    for w, a in answers:
        if a.answer is Answer.YES:
            tally.supported.append(f"a different estimator ({names(a.changed_by)}) changes the answer against "
                                   f"{a.base} on {w}")
        elif a.answer is Answer.NO:
            tally.not_supported.append(f"that a better estimator changes the answer against {a.base} on {w}")
    if untested:
        tally.not_tested.append(f"better estimators on {names(untested)}")
    for w, a in answers:
        if a.fidelity_only:
            tally.not_tested.append(f"training with {names(a.fidelity_only)} around {a.base} on {w} (fidelity "
                                    "measured, no arm ran)")


ACROSS = SuiteQuestion(key="estimators", write=_write)
