"""The suite report on a synthetic suite (report_synthetic.make_suite): profiles and scores worked out
by hand, win / tie / loss, the conclusion's sentences (and their flips), byte-identical rebuilds."""

from __future__ import annotations

import copy
import json
import re

import pytest
from report_synthetic import EPOCHS, STEPS_PER_EPOCH, make_results, make_suite, shift_suite

from hessian_lr.report import SUITE_FILES, summarize_suite, write_suite_report
from hessian_lr.report.suite import analyse_suite
from hessian_lr.report.verdicts import Answer, ClaimStatus, Effect

EARLY = 2  # early_epoch(10)


@pytest.fixture(scope="module")
def suite():
    return make_suite()


@pytest.fixture(scope="module")
def written(suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    return out, write_suite_report(suite, out)


def _paragraph(md: str, start: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(start))


def test_profiles_count_misses_and_arms_that_did_not_run(suite):
    summary = summarize_suite(suite)["summary"]
    steps = summary["profiles"]["steps"]
    # w-mlp: hessian-sgd and -secant reach the target at epoch 4 in every seed, adam's median seed at epoch 10;
    # w-never: a target nobody reaches; w-regression: adam and sgd tie, the wrapped arms never reach it, the
    # estimator arms and hessian-sgd did not run there (counted as not reached)
    assert steps["times"]["w-mlp"]["hessian-sgd"] == 4 * STEPS_PER_EPOCH
    assert steps["times"]["w-mlp"]["adam"] == EPOCHS * STEPS_PER_EPOCH
    assert steps["ratios"]["w-mlp"]["adam"] == 2.5 and steps["ratios"]["w-mlp"]["hessian-adam"] is None
    assert set(steps["ratios"]["w-never"].values()) == {None}
    assert steps["ratios"]["w-regression"] == {"adam": 1.0, "hessian-adam": None, "sgd": 1.0, "hessian-sgd": None,
                                               "hessian-adam-secant": None, "hessian-adam-hutchinson": None}
    # score = (1/3) * mean over workloads of max(0, 4 - r) / 3 ... per workload (4 - r) / 3, averaged
    assert steps["scores"] == pytest.approx({"adam": (0.5 + 0 + 1) / 3, "hessian-adam": 0.0, "sgd": (0.5 + 0 + 1) / 3,
                                             "hessian-sgd": 1 / 3, "hessian-adam-secant": 1 / 3,
                                             "hessian-adam-hutchinson": 0.0})
    wall = summary["profiles"]["wall_s"]  # epoch e ends 0.05 e seconds in: the same ratios
    assert wall["times"]["w-mlp"]["hessian-sgd"] == pytest.approx(0.2) and wall["ratios"]["w-mlp"]["adam"] == 2.5
    assert summary["not_run"] == [["w-never", "hessian-adam-secant"], ["w-never", "hessian-adam-hutchinson"],
                                  ["w-regression", "hessian-sgd"], ["w-regression", "hessian-adam-secant"],
                                  ["w-regression", "hessian-adam-hutchinson"]]
    row = summary["per_workload"]["w-mlp"]["arms"]["hessian-sgd"]
    assert row["time_to_target"]["steps"] == {"per_seed": [140] * 8, "median_seed": 140}
    assert row["tuned"] == {"lr": 0.03} and row["difference"]["outcome"] == "better"
    assert summary["per_workload"]["w-regression"]["arms"]["adam"]["test_accuracy_mean"] is None


def test_win_tie_loss_table(suite, written):
    table = summarize_suite(suite)["summary"]["win_tie_loss"]
    counts = {arm: (c["wins"], c["ties"], c["losses"], c["workloads"]) for arm, c in table["counts"].items()}
    assert counts == {"hessian-adam": (0, 0, 3, 3), "sgd": (0, 3, 0, 3), "hessian-sgd": (2, 0, 0, 2),
                      "hessian-adam-secant": (1, 0, 0, 1), "hessian-adam-hutchinson": (0, 0, 1, 1)}
    md = (written[0] / "suite.md").read_text()
    assert "| hessian-sgd | win | win | not run | 2 | 0 | 0 | 0 | 2 / 0 |" in md
    assert "| sgd | tie | tie | tie | 0 | 3 | 0 | 0 | 0 / 0 |" in md


def test_per_workload_tables(suite, written):
    md = (written[0] / "suite.md").read_text()
    results = analyse_suite(suite).results["w-mlp"]
    s = results.optimizers["hessian-sgd"].summary
    lo, hi = s["val_loss_ci95"]
    assert f"| hessian-sgd | {s['val_loss_mean']:.4f} [{lo:.4f}, {hi:.4f}] |" in md
    assert "| lr 0.03 | 8 / 8 | 140 | 0.20 |" in md
    regression = md[md.index("### w-regression"):md.index("## Win / tie / loss")]
    assert "No test accuracy (a regression workload)." in regression and "test accuracy" not in regression.split("\n|")[1]
    assert "Not run here: hessian-sgd, hessian-adam-secant, hessian-adam-hutchinson." in regression
    never = md[md.index("### w-never"):md.index("### w-regression")]
    assert "Target: validation loss ≤ 0.1000 (given)." in never and never.count("not reached") == 8


def test_fidelity_per_workload_and_a_missing_one(written):
    md = (written[0] / "suite.md").read_text()
    assert "| w-mlp | secant | 35 → 350 | 0.800 | 0.990 | 0.400 | 0.800 |" in md
    assert "| w-mlp | hutchinson | 35 → 350 | 0.300 | 0.500 | 0.200 | — |" in md
    assert "Not measured on: w-regression." in md


def test_the_conclusion_answers_the_claim_and_both_questions(written):
    md = (written[0] / "suite.md").read_text()
    conclusion = md[md.index("## Conclusion"):]
    assert ("The write-up's claim “Faster early” (hessian-adam vs adam), over the 3 workloads that test it: supported on "
            "3 (w-mlp, w-never, w-regression).") in conclusion
    assert ("yes on w-mlp (adam: hessian-adam-secant did better against adam than grad-diff); not tested on w-never, "
            "w-regression") in conclusion
    assert "it reached a lower final validation loss than grad-diff in 1, a higher one in 0" in conclusion
    assert "Wrapping sgd (no per-coordinate normalisation of its own), hessian-sgd − sgd over 2 workloads: helps on " \
           "w-mlp, w-never." in conclusion
    assert "It helped on 2 of 2 (workload, base) pairs" in conclusion and "against 0 of 3 for the bases" in conclusion
    w_mlp = conclusion[conclusion.index("### w-mlp"):conclusion.index("### w-never")]
    assert "**a different estimator changes the answer here**: hessian-adam-secant" in w_mlp
    assert "Does wrapping help a base without Adam's own normalisation? **Yes** here, for sgd." in w_mlp
    w_regression = conclusion[conclusion.index("### w-regression"):conclusion.index("### Across")]
    assert "Better estimators: **not tested** here" in w_regression
    assert "is **not tested** here: no such base" in w_regression
    assert "- better estimators on w-never, w-regression" in conclusion
    not_supported = conclusion[conclusion.index("**Not supported by these data:**"):]
    assert not_supported.split("\n\n")[1] == ("- that an estimate's fidelity predicts its final validation loss "
                                              "around adam (mean ρ -0.500, p = 1.0000)")


def test_a_flipped_effect_flips_the_conclusion(suite, tmp_path):
    slow = shift_suite(suite, "w-mlp", "hessian-adam", 0.5, range(EARLY, EARLY + 1))
    worse = shift_suite(slow, "w-mlp", "hessian-sgd", 0.3, range(5, EPOCHS + 1))
    analysis = analyse_suite(worse)
    early = next(c for c in analysis.verdicts.claims if c.id == "original/faster-early")
    assert early.statuses == {"w-mlp": ClaimStatus.CONTRADICTED, "w-never": ClaimStatus.SUPPORTED,
                              "w-regression": ClaimStatus.SUPPORTED}
    wrap = next(w for w in analysis.verdicts.workloads["w-mlp"].questions.of("wrapping") if w.base == "sgd")
    assert wrap.effect is Effect.MIXED and analysis.verdicts.workloads["w-mlp"].questions.answer("wrapping") is Answer.NO
    write_suite_report(worse, tmp_path)
    md = (tmp_path / "suite.md").read_text()
    assert ("“Faster early” (hessian-adam vs adam), over the 3 workloads that test it: supported on 2 (w-never, "
            "w-regression); contradicted on 1 (w-mlp).") in md
    assert "- “Faster early” on w-never, w-regression" in md and "- “Faster early” on w-mlp (contradicted)" in md
    assert "It helped on 1 of 2 (workload, base) pairs (w-never: sgd)" in md
    assert "- that wrapping helps sgd on w-mlp (mixed)" in md


def test_an_estimator_that_does_no_better_answers_no(suite):
    same = copy.deepcopy(suite)
    arms = same["workloads"]["w-mlp"]["optimizers"]
    arms["hessian-adam-secant"]["final"] = copy.deepcopy(arms["hessian-adam-hutchinson"]["final"])
    answer = analyse_suite(same).verdicts.workloads["w-mlp"].questions.of("estimators")[0]
    assert answer.answer is Answer.NO and answer.changed_by == () and answer.more_faithful == ("hessian-adam-secant",)
    assert "**the answer does not change**" in answer.text and "better than grad-diff in training: none" in answer.text


def test_a_suite_without_the_arms_says_what_it_did_not_test(tmp_path):
    results, _ = make_results(arms=("adam", "sgd"), ablation=False, workload="w")
    suite = {"schema": 1, "config": {"optimizers": ["adam", "sgd"]}, "versions": {}, "workloads": {"w": results.to_dict()}}
    conclusion = analyse_suite(suite).verdicts.conclusion
    assert len(conclusion.not_tested) == 3 and conclusion.supported == ()
    assert conclusion.overall[0].startswith("The write-up's claim (HessianLR(Adam) is faster early, Adam ends slightly "
                                            "lower) is **not tested**")
    assert "Would better curvature estimators change the answer? **Not tested**" in conclusion.overall[1]
    assert "Would other base optimizers change the answer? **Not tested**" in conclusion.overall[2]
    write_suite_report(suite, tmp_path)
    assert "**Statistically supported:** nothing." in (tmp_path / "suite.md").read_text()


def test_one_seed_is_untestable_not_a_claim():
    results, _ = make_results(arms=("adam", "hessian-adam", "sgd", "hessian-sgd"), k=1, ablation=False)
    suite = {"schema": 1, "config": {}, "versions": {}, "workloads": {"w": results.to_dict()}}
    verdicts = analyse_suite(suite).verdicts
    assert {c.outcome.value for c in verdicts.win_tie_loss.cells} == {"untestable"}
    assert verdicts.workloads["w"].questions.answer("wrapping") is Answer.UNTESTABLE
    assert verdicts.conclusion.supported == () and verdicts.conclusion.not_supported == ()


def test_rebuilt_from_suite_json_byte_identically(suite, written, tmp_path):
    out, files = written
    assert sorted(files) == sorted((*SUITE_FILES, "fidelity_training.png"))  # estimator arms beside a fidelity study
    stored = summarize_suite(suite)
    (tmp_path / "suite.json").write_text(json.dumps(stored, indent=2, allow_nan=False))
    again = json.loads((tmp_path / "suite.json").read_text())
    assert summarize_suite(again) == stored  # idempotent: the summary is recomputed, not read
    write_suite_report(again, tmp_path)
    for name in files:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_html_is_self_contained(written):
    page = (written[0] / "suite.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 2
    assert not re.search(r"(src|href)=\"(http|//|[a-z_]+\.png)", page) and "<h2>Conclusion</h2>" in page


def test_bad_suites_are_refused(suite):
    with pytest.raises(ValueError, match="at least one workload"):
        analyse_suite({**suite, "workloads": {}})
    swapped = copy.deepcopy(suite)
    arms = swapped["workloads"]["w-never"]["optimizers"]
    swapped["workloads"]["w-never"]["optimizers"] = {"sgd": arms.pop("sgd"), **arms}
    with pytest.raises(ValueError, match="first arm"):
        analyse_suite(swapped)


def test_estimators_measured_but_not_trained_are_listed_as_not_tested(suite):
    fewer = copy.deepcopy(suite)
    del fewer["workloads"]["w-mlp"]["optimizers"]["hessian-adam-hutchinson"]
    analysis = analyse_suite(fewer)
    answer = analysis.verdicts.workloads["w-mlp"].questions.of("estimators")[0]
    assert answer.fidelity_only == ("hutchinson",)
    assert "Measured for fidelity but not trained around adam: hutchinson." in answer.text
    assert ("training with hutchinson around adam on w-mlp (fidelity measured, no arm ran)"
            in analysis.verdicts.conclusion.not_tested)
