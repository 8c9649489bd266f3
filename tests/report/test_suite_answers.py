"""The suite report's computed answers on synthetic suites (no training): which estimator and does
fidelity predict training (a hand-computed correlation and permutation p), which bases gain and
whether that tracks per-coordinate normalisation, and whether anything beats a tuned Adam."""

from __future__ import annotations

import copy
import json

import pytest
from report_synthetic import SHAPES, make_results, make_suite

from hessian_lr.report import summarize_suite, write_suite_report
from hessian_lr.report.suite import analyse_suite
from hessian_lr.report.verdicts import Outcome

# Final-loss floors, well apart (seed noise is 0.004): secant < squared-grad < grad-diff < hutchinson.
FLOORS = {"hessian-adam": 1.10, "hessian-adam-squared-grad": 1.05, "hessian-adam-secant": 0.95,
          "hessian-adam-hutchinson": 1.20, "hessian-adam-gauss-newton": 1.30}
ESTIMATOR_ARMS = ("adam", *FLOORS)


def _fidelity(means: dict[str, float]) -> dict:
    """A fidelity.json whose estimators have these mean Spearman values (two checkpoints, ±0.05 apart);
    gauss-newton skipped, as on a regression workload."""
    return {"checkpoints": [35, 350], "config": {"workload": "w"},
            "estimators": {e: {"spearman": [round(m - 0.05, 6), round(m + 0.05, 6)], "log_pearson": [0.5, 0.6]}
                           for e, m in means.items()},
            "skipped": {"gauss-newton": "classification workloads only"}}


# Loss ranks by estimator (grad-diff, squared-grad, secant, hutchinson): 3, 2, 1, 4.
# w-a fidelity ranks 3, 2, 4, 1: centred (0.5, -0.5, 1.5, -1.5) · (0.5, -0.5, -1.5, 1.5) = -4 over 5, rho = -0.8.
# w-b fidelity ranks 2, 3, 4, 1: the losses' exactly reversed, rho = -1.
FIDELITY_A = {"grad-diff": 0.9, "squared-grad": 0.7, "secant": 0.95, "hutchinson": 0.3}
FIDELITY_B = {"grad-diff": 0.5, "squared-grad": 0.6, "secant": 0.7, "hutchinson": 0.1}


@pytest.fixture(scope="module")
def estimator_suite() -> dict:
    saved = {arm: SHAPES.get(arm) for arm in FLOORS}
    for arm, floor in FLOORS.items():
        SHAPES[arm] = (0.004, 0.80, floor)
    try:
        workloads = {w: make_results(arms=ESTIMATOR_ARMS, ablation=False, workload=w)[0].to_dict()
                     for w in ("w-a", "w-b")}
    finally:
        for arm, shape in saved.items():
            SHAPES.pop(arm) if shape is None else SHAPES.__setitem__(arm, shape)
    return {"schema": 1, "config": {"workloads": list(workloads), "optimizers": list(ESTIMATOR_ARMS), "trials": 5,
                                    "seeds": 8, "question": "estimators"},
            "versions": {"python": "3.11"}, "workloads": workloads,
            "fidelity": {"w-a": _fidelity(FIDELITY_A), "w-b": _fidelity(FIDELITY_B)}}


def test_fidelity_predicts_training_by_hand(estimator_suite):
    """rho -0.8 and -1, mean -0.9. For n = 4 the 24 orderings give rho 1, 0.8, ..., -1 with counts
    1, 3, 1, 4, 2, 2, 2, 4, 1, 3, 1; |rho_a + rho_b| >= 1.8 needs (1, 1), (1, 0.8) or (0.8, 1) on either
    side: p = 2 * (1 + 3 + 3) / 576 = 7/288."""
    study = analyse_suite(estimator_suite).verdicts.answers["estimator_study"]
    groups = {g.workload: g for g in study.groups}
    assert groups["w-a"].estimators == ("grad-diff", "squared-grad", "secant", "hutchinson")
    assert groups["w-a"].left_out == ("gauss-newton",)  # trained, but no fidelity on this workload
    assert groups["w-a"].rho == pytest.approx(-0.8) and groups["w-b"].rho == pytest.approx(-1.0)
    assert groups["w-a"].loss_rank == pytest.approx((2 / 3, 1 / 3, 0.0, 1.0))
    (pooled,) = study.pooled  # one base: no separate "all"
    assert pooled.scope == "adam" and pooled.test.statistic == pytest.approx(-0.9)
    assert (pooled.test.method, pooled.test.permutations) == ("exact", 576)
    assert pooled.test.p_value == pytest.approx(7 / 288, abs=1e-12)
    assert pooled.answer == "yes"
    assert "p = 0.0243 (exact over all 576 permutations) — **yes**: more faithful estimators" in pooled.text
    secant = study.cell("w-a", "adam", "secant")
    assert secant.fidelity == pytest.approx(0.95) and secant.vs_reference_outcome is Outcome.BETTER
    assert secant.vs_base_outcome is Outcome.BETTER and secant.vs_reference.mean_diff == pytest.approx(-0.15, abs=0.01)
    tally = next(t for t in study.tallies if t.estimator == "secant")
    assert tally.counts(tally.vs_reference) == {"better": 2, "tie": 0, "worse": 0, "untestable": 0}
    assert "Lower than grad-diff on at least 2 workloads: squared-grad, secant." in study.texts[0]


def test_estimator_sections_in_the_report_and_a_byte_identical_rebuild(estimator_suite, tmp_path):
    files = write_suite_report(estimator_suite, tmp_path / "a")
    assert sorted(files) == ["fidelity_training.png", "profiles.png", "suite.html", "suite.md"]
    md = (tmp_path / "a" / "suite.md").read_text()
    assert ("This suite was run to answer the write-up's closing question: would a more accurate estimate of the "
            "Hessian diagonal give better results?") in md
    answers = md[md.index("## Answers"):md.index("## Method")]
    assert "Does fidelity predict training (around adam)? Mean Spearman ρ" in answers
    assert ("| w-a | adam | secant | 0.950 | " in md and "| w-a | adam | grad-diff | 0.900 | " in md
            and "| grad-diff itself | — | — |" in md)
    assert "| w-a | adam | 4 | -0.800 | gauss-newton |" in md and "| w-b | adam | 4 | -1.000 | gauss-newton |" in md
    assert "| adam | secant | 2 / 0 / 0 / 0 | 2 / 0 / 0 / 0 |" in md
    assert "![fidelity against the final validation loss's rank" in md and "(fidelity_training.png)" in md
    assert (tmp_path / "a" / "suite.html").read_text().count("data:image/png;base64,") == 2
    stored = summarize_suite(estimator_suite)
    assert stored["summary"]["question"] == "estimators"
    pooled = stored["summary"]["answers"]["estimator_study"]["pooled"][0]
    assert pooled["answer"] == "yes" and pooled["test"]["p_value"] == pytest.approx(7 / 288)
    again = json.loads(json.dumps(stored))
    write_suite_report(again, tmp_path / "b")
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_bases_gain_and_the_normalisation_comparison():
    """make_suite: hessian-sgd is below sgd on w-mlp and w-never, hessian-adam above adam everywhere."""
    suite = make_suite()
    study = analyse_suite(suite).verdicts.answers["base_study"]
    assert [(t.base, t.normalises, t.gains) for t in study.tallies] == [("adam", True, ()),
                                                                        ("sgd", False, ("w-mlp", "w-never"))]
    cell = study.tallies[1].cells[0]
    assert cell.relative == pytest.approx(cell.final.mean_diff / cell.base_loss)
    assert study.texts[0].endswith("? sgd on w-mlp, w-never.")
    assert ("Does the gain track per-coordinate normalisation? For bases that normalise each coordinate themselves "
            "(adam), wrapping lowered the final loss on 0 of 3 (workload, base) pairs (median change +5."
            in study.texts[2])
    assert "for bases without a per-coordinate normalisation (sgd), wrapping lowered the final loss on 2 of 2" \
        in study.texts[2]
    assert "— gains were more frequent without per-coordinate normalisation" in study.texts[2]
    declared = copy.deepcopy(suite)  # the arm's provenance says so: it wins over the names table
    declared["workloads"]["w-mlp"]["optimizers"]["sgd"]["source"]["normalises"] = True
    relabelled = analyse_suite(declared).verdicts.answers["base_study"]
    assert relabelled.tallies[1].normalises is True and len(relabelled.groups) == 1
    assert "**Not tested**: no base without a per-coordinate normalisation" in relabelled.texts[2]


def test_what_beats_a_tuned_adam_whichever_arm_is_the_baseline():
    suite = make_suite()
    record = analyse_suite(suite).verdicts.answers["beats_adam"]
    assert record.winners == ("hessian-sgd",)
    assert {a.arm: a.wins for a in record.arms}["hessian-sgd"] == ("w-mlp", "w-never")
    assert record.text.startswith("Does anything beat a tuned adam") and "**Yes**: hessian-sgd on 2" in record.text
    # sgd first: adam is no longer the baseline, the same differences are computed against it
    results, _ = make_results(arms=("sgd", "adam", "hessian-sgd"), ablation=False, workload="w1")
    twice = {"schema": 1, "config": {}, "versions": {},
             "workloads": {w: {**results.to_dict(), "config": {**results.to_dict()["config"], "workload": w}}
                           for w in ("w1", "w2")}}
    record = analyse_suite(twice).verdicts.answers["beats_adam"]
    assert record.winners == ("hessian-sgd",) and [a.arm for a in record.arms] == ["sgd", "hessian-sgd"]
    assert record.arms[0].outcomes == {"w1": Outcome.TIE, "w2": Outcome.TIE}


def test_none_beats_adam_and_no_adam_is_not_tested():
    results, _ = make_results(arms=("adam", "hessian-adam"), ablation=False, workload="w")
    suite = {"schema": 1, "config": {}, "versions": {}, "workloads": {"w": results.to_dict()}}
    analysis = analyse_suite(suite)
    record = analysis.verdicts.answers["beats_adam"]
    assert record.winners == () and "**No arm does**, over 1 workload and 1 other arm" in record.text
    assert ("that any arm beats a tuned adam on 2 or more workloads" in analysis.verdicts.conclusion.not_supported)
    results, _ = make_results(arms=("sgd", "hessian-sgd"), ablation=False, workload="w")
    record = analyse_suite({**suite, "workloads": {"w": results.to_dict()}}).verdicts.answers["beats_adam"]
    assert record.text == "Does anything beat a tuned adam? **Not tested**: adam did not run."
    assert analyse_suite({**suite, "workloads": {"w": results.to_dict()}}).verdicts.answers["estimator_study"] is None
