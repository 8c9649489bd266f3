"""The write-up's second question: would other base optimizers change the answer?

Per workload, ``hessian-<base>`` against ``<base>`` for every base that ran wrapped and plain
(``WrapAnswer``); the question is whether wrapping helps a base without Adam's own per-coordinate
normalisation (``arms.names.normalises``). Across the suite, each base's effects are tallied over
the workloads, the unnormalised bases against those that normalise themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from hessian_lr.arms.names import normalises, wrapped_name
from hessian_lr.report.summary import early_epoch, paired_rows
from hessian_lr.report.verdicts.comparisons import Comparison, Outcome, held, short_text
from hessian_lr.report.verdicts.fidelity import EstimatorFidelity
from hessian_lr.report.verdicts.questions import Answer, Question, Questions
from hessian_lr.report.verdicts.tally import SuiteEvidence, SuiteQuestion, Tally, by_value
from hessian_lr.report.verdicts.text import counted, names
from hessian_lr.results import Results

__all__ = ["Effect", "WrapAnswer", "ask", "unnormalised", "texts", "QUESTION", "ACROSS"]


class Effect(str, Enum):
    """What wrapping a base optimizer did, from its early and final validation-loss differences."""

    HELPS = "helps"  # lower final loss, not higher early
    FASTER_EARLY = "faster early only"  # lower early, the same at the end
    NO_DIFFERENCE = "no difference"
    SLOWER_EARLY = "slower early only"
    HURTS = "hurts"  # higher final loss, not lower early
    MIXED = "mixed"  # lower at one point, higher at the other
    UNTESTABLE = "untestable"

    @property
    def helps(self) -> bool:
        return self in (Effect.HELPS, Effect.FASTER_EARLY)


@dataclass(frozen=True)
class WrapAnswer:
    """Wrapping one base optimizer on one workload: ``wrapped − base`` in validation loss at the early
    epoch and at the end, paired by seed, Holm over the workload's wrapped/base pairs per epoch."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("effect", "text")

    workload: str
    base: str
    wrapped: str
    normalises: bool | None
    early: Comparison | None
    final: Comparison | None

    @property
    def effect(self) -> Effect:
        early, final = held(self.early), held(self.final)
        if final is Outcome.UNTESTABLE:
            return Effect.UNTESTABLE
        if {early, final} >= {Outcome.BETTER, Outcome.WORSE}:
            return Effect.MIXED
        if final is not Outcome.TIE:
            return Effect.HELPS if final is Outcome.BETTER else Effect.HURTS
        early_only = {Outcome.BETTER: Effect.FASTER_EARLY, Outcome.WORSE: Effect.SLOWER_EARLY}
        return early_only.get(early, Effect.NO_DIFFERENCE)

    @property
    def normalisation(self) -> str:
        words = {True: "normalises each coordinate itself, as Adam does",
                 False: "no per-coordinate normalisation of its own"}
        return words.get(self.normalises, "normalisation not classified")

    @property
    def text(self) -> str:
        early = "" if self.early is None else f"early (epoch {self.early.epoch}) {short_text(self.early)}, "
        final = "" if self.final is None else f"final (epoch {self.final.epoch}) {short_text(self.final)}"
        return (f"Wrapping {self.base} ({self.normalisation}): {self.wrapped} − {self.base} in validation loss "
                f"{early}{final} — **{self.effect.value}**.")


def ask(results: Results, fidelity: tuple[EstimatorFidelity, ...]) -> tuple[WrapAnswer, ...]:
    """One ``WrapAnswer`` per base that ran both plain and as ``hessian-<base>``."""
    arms = list(results.optimizers)
    epochs = int(results.config["epochs"])
    name = str(results.config.get("workload"))
    pairs = [(wrapped_name(base), base) for base in arms if wrapped_name(base) in arms]
    rows = {epoch: [Comparison.from_row(r) for r in paired_rows(results, pairs, "val_loss", epoch)]
            for epoch in sorted({early_epoch(epochs), epochs})}
    return tuple(WrapAnswer(workload=name, base=base, wrapped=wrapped, normalises=normalises(base),
                            early=rows[early_epoch(epochs)][i] if early_epoch(epochs) < epochs else None,
                            final=rows[epochs][i])
                 for i, (wrapped, base) in enumerate(pairs))


def unnormalised(answers: Sequence[WrapAnswer]) -> tuple[WrapAnswer, ...]:
    """The wrapped bases without a per-coordinate normalisation of their own."""
    return tuple(w for w in answers if w.normalises is False)


def _answer(answers: Sequence[WrapAnswer]) -> Answer:
    """Does wrapping help a base without Adam's own normalisation (yes when it helps one of them)?"""
    pairs = unnormalised(answers)
    if not pairs:
        return Answer.NOT_TESTED
    if any(w.effect.helps for w in pairs):
        return Answer.YES
    return Answer.UNTESTABLE if all(w.effect is Effect.UNTESTABLE for w in pairs) else Answer.NO


def texts(questions: Questions) -> list[str]:
    """One paragraph: every wrapped/plain pair, then the answer for the unnormalised bases."""
    answers = questions.of(QUESTION.key)
    if not answers:
        return ["Other base optimizers: **not tested** here (no `hessian-<base>` arm ran beside its `<base>`)."]
    pairs = " ".join(w.text for w in answers)
    answer = _answer(answers)
    if answer is Answer.NOT_TESTED:
        closing = ("Whether wrapping helps a base without Adam's own normalisation is **not tested** here: no "
                   "such base (e.g. `sgd` with `hessian-sgd`) ran.")
    else:
        helped = [w.base for w in unnormalised(answers) if w.effect.helps]
        closing = ("Does wrapping help a base without Adam's own normalisation? "
                   + {Answer.YES: f"**Yes** here, for {names(helped)}.",
                      Answer.NO: "**No** here: "
                      + "; ".join(f"{w.base}: {w.effect.value}" for w in unnormalised(answers)) + ".",
                      Answer.UNTESTABLE: "Untestable here (single seed)."}[answer])
    return [f"{pairs} {closing}"]


QUESTION = Question(key="wrapping", ask=ask, answer=_answer, texts=texts)


def _write(record: Any, evidence: SuiteEvidence, tally: Tally) -> None:
    """Each base's effects over the workloads, then the unnormalised bases against the others."""
    pairs = [w for q in evidence.questions.values() for w in q.of(QUESTION.key)]
    if not pairs:
        tally.overall.append("Would other base optimizers change the answer? **Not tested**: no workload ran a "
                             "`hessian-<base>` arm beside its `<base>`.")
        tally.not_tested.append("other base optimizers (no wrapped/plain pair ran)")
        return
    for base in dict.fromkeys(w.base for w in pairs):
        mine = [w for w in pairs if w.base == base]
        groups = by_value({w.workload: w.effect for w in mine}, list(Effect))
        tally.overall.append(f"Wrapping {base} ({mine[0].normalisation}), {mine[0].wrapped} − {base} over "
                             f"{counted(len(mine), 'workload')}: "
                             + "; ".join(f"{effect.value} on {names(ws)}" for effect, ws in groups) + ".")
    plain = unnormalised(pairs)
    if not plain:
        tally.overall.append("Does wrapping help a base without Adam's own normalisation? **Not tested**: no such base "
                             "(e.g. `sgd` with `hessian-sgd`) ran.")
        tally.not_tested.append("wrapping a base without Adam's normalisation (e.g. hessian-sgd vs sgd)")
        return
    helped = [w for w in plain if w.effect.helps]
    reference = [w for w in pairs if w.normalises]
    text = (f"Does wrapping help a base without Adam's own normalisation? It helped on {len(helped)} of "
            f"{len(plain)} (workload, base) pairs ({names([f'{w.workload}: {w.base}' for w in helped])})")
    if reference:
        text += (f", against {sum(w.effect.helps for w in reference)} of {len(reference)} for the bases that "
                 f"normalise themselves ({names(list(dict.fromkeys(w.base for w in reference)))})")
    tally.overall.append(text + ".")
    for w in plain:
        if w.effect.helps:
            tally.supported.append(f"wrapping {w.base} {w.effect.value} on {w.workload}")
        elif w.effect is not Effect.UNTESTABLE:
            tally.not_supported.append(f"that wrapping helps {w.base} on {w.workload} ({w.effect.value})")


ACROSS = SuiteQuestion(key="wrapping", write=_write)
