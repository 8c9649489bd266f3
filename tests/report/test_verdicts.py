"""The verdicts package on synthetic results with known effects: flip an effect and the verdict flips."""

from __future__ import annotations

import json

import pytest
from report_synthetic import EPOCHS, make_results, shift_curves

from hessian_lr.report import render_markdown, summarize
from hessian_lr.report.verdicts import (ClaimStatus, Comparison, Outcome, claims_across_workloads, judge_claim,
                                        win_tie_loss, workload_verdicts)

EARLY = 2  # early_epoch(10)


def _row(**overrides) -> dict:
    row = {"arm": "b", "baseline": "a", "metric": "val_loss", "epoch": 10, "n": 8, "mean_diff": -0.1,
           "ci95": [-0.2, -0.05], "p_t": 0.001, "p_wilcoxon": 0.01, "p_holm": 0.002}
    return {**row, **overrides}


def _claims(results) -> dict[str, ClaimStatus]:
    return {c.id: c.status for c in workload_verdicts(results).reproduction.claims}


def test_comparison_outcomes_follow_the_ci_and_the_metric_direction():
    assert Comparison.from_row(_row()).outcome is Outcome.BETTER  # lower loss
    assert Comparison.from_row(_row(metric="test_accuracy")).outcome is Outcome.WORSE  # lower accuracy
    assert Comparison.from_row(_row(ci95=[-0.2, 0.05])).outcome is Outcome.TIE
    assert Comparison.from_row(_row(ci95=None, n=1)).outcome is Outcome.UNTESTABLE
    failed_holm = Comparison.from_row(_row(p_holm=0.2))
    assert failed_holm.outcome is Outcome.BETTER and not failed_holm.survives_holm and not failed_holm.significant
    assert failed_holm.label == "b better by CI, not after Holm"
    ablation = Comparison.from_row({"arm": "b", "other": "a", "epoch": 2, "n": 8, "mean_diff": 0.1, "ci95": [0.05, 0.2]})
    assert (ablation.baseline, ablation.p_holm, ablation.survives_holm, ablation.outcome) == ("a", None, True,
                                                                                              Outcome.WORSE)
    flipped = Comparison.from_row(_row()).flipped()
    assert (flipped.arm, flipped.baseline, flipped.mean_diff, flipped.ci95, flipped.outcome) == (
        "a", "b", 0.1, (0.05, 0.2), Outcome.WORSE)
    assert json.loads(json.dumps(Comparison.from_row(_row()).to_dict()))["outcome"] == "better"


@pytest.mark.parametrize(("row", "claimed", "expected"), [
    (_row(), -1, (ClaimStatus.SUPPORTED, None)),
    (_row(), +1, (ClaimStatus.CONTRADICTED, None)),
    (_row(ci95=[-0.2, 0.1]), -1, (ClaimStatus.NOT_SUPPORTED, None)),
    (_row(ci95=None, n=1), -1, (ClaimStatus.SINGLE_SEED_SIGN, True)),
    (_row(ci95=None, n=1), +1, (ClaimStatus.SINGLE_SEED_SIGN, False)),
    (_row(mean_diff=None, ci95=None, n=0), -1, (ClaimStatus.UNTESTABLE, None)),
    (None, -1, (ClaimStatus.UNTESTABLE, None)),
])
def test_judge_claim(row, claimed, expected):
    assert judge_claim(None if row is None else Comparison.from_row(row), claimed) == expected


def test_the_synthetic_effects_support_both_claims(synthetic):
    results, runs = synthetic
    verdicts = workload_verdicts(summarize(results, runs))
    assert _claims(results) == {"original/faster-early": ClaimStatus.SUPPORTED,
                                "original/adam-lower-at-end": ClaimStatus.SUPPORTED}
    assert verdicts.baseline == "adam" and verdicts.seeds == 8
    assert verdicts.comparison("hessian-adam", "val_loss", EARLY).outcome is Outcome.BETTER
    assert verdicts.conclusion.supported[0] == "hessian-adam beats adam in early (epoch 2) validation loss"
    assert verdicts.conclusion.not_supported == []
    kinds = [f.kind for f in verdicts.conclusion.arms[0].findings]
    assert kinds == ["difference"] * 3 + ["time_to_target"] + ["equal_lr"] * 2


def test_slower_early_flips_the_claim_and_the_conclusion_sentence(synthetic):
    results, runs = synthetic
    summarize(shift_curves(results, "hessian-adam", 0.5, range(EARLY, EARLY + 1)), runs)
    verdicts = workload_verdicts(results)
    assert _claims(results)["original/faster-early"] is ClaimStatus.CONTRADICTED
    assert _claims(results)["original/adam-lower-at-end"] is ClaimStatus.SUPPORTED  # the end is untouched
    assert verdicts.conclusion.supported[0] == "hessian-adam is worse than adam in early (epoch 2) validation loss"
    md = render_markdown(results, plot_name=None)
    assert "**contradicted**" in md and "**hessian-adam is worse than adam in early (epoch 2) validation loss**" in md
    assert "hessian-adam beats adam in early (epoch 2) validation loss" not in md


def test_ending_lower_contradicts_adam_lower_at_the_end(synthetic):
    results, runs = synthetic
    summarize(shift_curves(results, "hessian-adam", -0.2, range(5, EPOCHS + 1)), runs)
    assert _claims(results)["original/adam-lower-at-end"] is ClaimStatus.CONTRADICTED
    supported = workload_verdicts(results).conclusion.supported
    assert "hessian-adam beats adam in final (epoch 10) validation loss" in supported
    # hessian-adam now reaches adam's target: the time-to-target sentence counts its seeds
    ttt = next(f for f in workload_verdicts(results).conclusion.arms[0].findings if f.kind == "time_to_target")
    assert ttt.text == "Time to target: hessian-adam reached it in 8 of 8 seeds, adam in 4 of 8."


def test_a_tie_is_not_supported_and_says_so():
    results, _ = make_results(arms=("adam", "hessian-adam", "sgd"), ablation=False)
    verdicts = workload_verdicts(summarize(results))
    sgd = next(a for a in verdicts.conclusion.arms if a.arm == "sgd")
    assert all(f.text.endswith("— within seed noise.") for f in sgd.findings if f.kind == "difference")
    assert "a difference between sgd and adam in test accuracy" in verdicts.conclusion.not_supported


def test_equal_lr_findings(synthetic):
    results, runs = synthetic
    verdicts = workload_verdicts(summarize(results, runs))
    early, final = (f for f in verdicts.conclusion.arms[0].findings if f.kind == "equal_lr")
    assert early.supported == "hessian-adam beats adam in early (epoch 2) validation loss at equal lr"
    assert final.supported == "hessian-adam is worse than adam in final (epoch 10) validation loss at equal lr"
    assert len(early.evidence) == 2 and all(c.arm == "hessian-adam" for c in early.evidence)  # both read arm − base
    three, runs3 = make_results(arms=("adam", "hessian-adam", "sgd"))
    sgd = next(a for a in workload_verdicts(summarize(three, runs3)).conclusion.arms if a.arm == "sgd")
    mixed = [f for f in sgd.findings if f.kind == "equal_lr"]
    assert all("the effect depends on the lr" in f.text and f.supported is None for f in mixed)
    assert mixed[0].not_supported == "a consistent equal-lr effect of sgd in early validation loss"


def test_single_seed_gives_signs_not_claims():
    results, _ = make_results(k=1, ablation=False)
    verdicts = workload_verdicts(summarize(results))
    assert set(_claims(results).values()) == {ClaimStatus.SINGLE_SEED_SIGN}
    assert all(c.sign_matches for c in verdicts.reproduction.claims)
    assert verdicts.conclusion.supported == [] and verdicts.conclusion.not_supported == []
    assert verdicts.conclusion.closing[0].startswith("These are single training runs")
    assert {c.outcome for c in verdicts.comparisons} == {Outcome.UNTESTABLE}


def test_one_arm_and_no_reproduction_without_adam():
    results, _ = make_results(arms=("adam",), ablation=False)
    verdicts = workload_verdicts(summarize(results))
    assert verdicts.conclusion.arms == () and "nothing to compare" in verdicts.conclusion.closing[0]
    assert verdicts.lr_order is None and verdicts.reproduction is None
    other, _ = make_results(arms=("sgd", "hessian-adam"), ablation=False)
    assert workload_verdicts(summarize(other)).reproduction is None  # the write-up compared with adam


def test_unsummarized_results_are_refused(synthetic):
    with pytest.raises(ValueError, match="summarize"):
        workload_verdicts(synthetic[0])


def test_win_tie_loss_across_workloads():
    plain, _ = make_results(arms=("adam", "hessian-adam", "sgd"), ablation=False)
    better, _ = make_results(arms=("adam", "hessian-adam", "sgd"), ablation=False)
    shift_curves(better, "hessian-adam", -0.2, range(5, EPOCHS + 1))
    single, _ = make_results(arms=("adam", "hessian-adam"), k=1, ablation=False)
    table = win_tie_loss({"plain": summarize(plain), "better": summarize(better), "single": summarize(single)})
    assert table.baseline == "adam" and table.arms == ("hessian-adam", "sgd")
    assert table.cell("plain", "hessian-adam").outcome is Outcome.WORSE
    assert table.cell("better", "hessian-adam").outcome is Outcome.BETTER
    assert table.cell("single", "sgd") is None  # not run there: not counted
    h, s = table.counts["hessian-adam"], table.counts["sgd"]
    assert (h.workloads, h.wins, h.ties, h.losses, h.untestable) == (3, 1, 0, 1, 1)
    assert (s.workloads, s.wins, s.ties, s.losses, s.untestable) == (2, 0, 2, 0, 0)
    assert (h.wins_after_holm, h.losses_after_holm) == (1, 1)
    row = next(r for r in plain.extra["pairwise"]["comparisons"]
               if r["arm"] == "hessian-adam" and r["metric"] == "val_loss" and r["epoch"] == EPOCHS)
    row["p_holm"] = 0.3  # the loss by CI stays a loss; it no longer survives Holm
    again = win_tie_loss({"plain": plain}).counts["hessian-adam"]
    assert (again.losses, again.losses_after_holm) == (1, 0)
    accuracy = win_tie_loss({"plain": plain}, metric="test_accuracy").counts["hessian-adam"]
    assert accuracy.losses == 1  # lower accuracy: a loss with higher-is-better


def test_win_tie_loss_refuses_mixed_baselines_and_nothing():
    adam, _ = make_results(ablation=False)
    sgd, _ = make_results(arms=("sgd", "hessian-adam"), ablation=False)
    with pytest.raises(ValueError, match="different baselines"):
        win_tie_loss({"a": summarize(adam), "b": summarize(sgd)})
    with pytest.raises(ValueError):
        win_tie_loss({})


def test_claims_across_workloads():
    plain, _ = make_results(ablation=False)
    slow, _ = make_results(ablation=False)
    shift_curves(slow, "hessian-adam", 0.5, range(EARLY, EARLY + 1))
    no_adam, _ = make_results(arms=("sgd", "hessian-adam"), ablation=False)
    verdicts = {name: workload_verdicts(summarize(r)) for name, r in
                (("plain", plain), ("slow", slow), ("no-adam", no_adam))}
    early, end = claims_across_workloads(verdicts)
    assert (early.id, early.statement) == ("original/faster-early", "Faster early")
    assert early.statuses == {"plain": ClaimStatus.SUPPORTED, "slow": ClaimStatus.CONTRADICTED}
    assert (early.count(ClaimStatus.SUPPORTED), early.count(ClaimStatus.CONTRADICTED)) == (1, 1)
    assert end.count(ClaimStatus.SUPPORTED) == 2


def test_win_tie_loss_and_profile_sentences():
    from hessian_lr.report.profiles import performance_profiles
    from hessian_lr.report.verdicts import profile_standings

    plain, _ = make_results(arms=("adam", "hessian-adam", "sgd"), ablation=False)
    counts = win_tie_loss({"plain": summarize(plain)}).counts
    assert counts["hessian-adam"].text == ("0 wins, 0 ties, 1 loss, 0 untestable over 1 workload "
                                           "(after Holm's correction: 0 wins, 1 loss)")
    profiles = performance_profiles({"w1": {"a": [10], "b": [5]}, "w2": {"a": [5], "b": [5]},
                                     "w3": {"a": [None], "b": [None]}})
    standings = profile_standings(profiles)
    assert [s.arm for s in standings] == ["b", "a"]  # b: ratios 1, 1, inf; a: 2, 1, inf
    assert standings[0].text == "b: score 0.667, fastest on 2 of 3 workload(s), reached the target on 2"
    assert (standings[1].fastest_on, standings[1].reached_on, standings[1].score) == (1, 2, pytest.approx(5 / 9))


def test_the_claim_is_judged_whichever_arm_is_the_baseline():
    first, _ = make_results(arms=("sgd", "adam", "hessian-adam"), ablation=False)
    verdicts = workload_verdicts(summarize(first))
    assert verdicts.baseline == "sgd"
    assert {c.id: c.status for c in verdicts.reproduction.claims} == {
        "original/faster-early": ClaimStatus.SUPPORTED, "original/adam-lower-at-end": ClaimStatus.SUPPORTED}
    evidence = verdicts.reproduction.claims[0].evidence
    assert (evidence.arm, evidence.baseline, evidence.epoch) == ("hessian-adam", "adam", EARLY)
    plain, _ = make_results(arms=("adam", "hessian-adam", "sgd"), ablation=False)
    same = workload_verdicts(summarize(plain)).reproduction.claims[0].evidence
    assert same.mean_diff == pytest.approx(evidence.mean_diff) and same.ci95 == pytest.approx(evidence.ci95)


def test_the_write_ups_questions_on_one_workload():
    from hessian_lr.report.verdicts import Answer, Effect

    arms = ("adam", "hessian-adam", "sgd", "hessian-sgd", "hessian-adam-secant", "hessian-adam-hutchinson")
    results, _ = make_results(arms=arms, ablation=False)
    questions = workload_verdicts(summarize(results)).questions
    (estimators,) = questions.of("estimators")
    assert (estimators.base, estimators.reference) == ("adam", "hessian-adam")
    assert estimators.estimators == {"hessian-adam-secant": "secant", "hessian-adam-hutchinson": "hutchinson"}
    assert estimators.answer is Answer.YES and estimators.changed_by == ("hessian-adam-secant",)
    assert estimators.better_than_reference == ("hessian-adam-secant",) and estimators.fidelity == ()
    assert "Fidelity was not measured on this workload." in estimators.text
    wraps = {w.base: w for w in questions.of("wrapping")}
    assert wraps["adam"].effect is Effect.MIXED and wraps["sgd"].effect is Effect.HELPS
    assert wraps["sgd"].normalises is False and questions.answer("wrapping") is Answer.YES
    # remove hessian-sgd's final lead over sgd exactly (the same mean final loss): still faster early
    finals = {arm: [s["val_loss"] for s in results.optimizers[arm].final["seeds"]] for arm in ("sgd", "hessian-sgd")}
    shift_curves(results, "hessian-sgd", (sum(finals["sgd"]) - sum(finals["hessian-sgd"])) / 8, range(5, EPOCHS + 1))
    again = workload_verdicts(summarize(results)).questions
    sgd = next(w for w in again.of("wrapping") if w.base == "sgd")
    assert sgd.effect is Effect.FASTER_EARLY and again.answer("wrapping") is Answer.YES  # still faster early
    shift_curves(results, "hessian-sgd", 0.5, range(1, 5))
    late = next(w for w in workload_verdicts(summarize(results)).questions.of("wrapping") if w.base == "sgd")
    assert late.effect is Effect.SLOWER_EARLY and "— **slower early only**." in late.text


def test_compare_report_renders_the_questions(tmp_path):
    from hessian_lr.report import write_report

    results, _ = make_results(arms=("adam", "hessian-adam", "sgd", "hessian-sgd"), ablation=False)
    summarize(results)
    write_report(results, tmp_path)
    md = (tmp_path / "report.md").read_text()
    section = md[md.index("## The write-up's questions"):md.index("## Conclusion")]
    assert "Better estimators: **not tested** here" in section
    assert "Wrapping sgd (no per-coordinate normalisation of its own): hessian-sgd − sgd" in section
    assert "**Yes** here, for sgd." in section


def test_verdict_data_is_json_ready():
    from hessian_lr.report.verdicts import verdict_data

    results, _ = make_results(arms=("adam", "hessian-adam", "sgd", "hessian-sgd"), ablation=False)
    verdicts = workload_verdicts(summarize(results))
    data = json.loads(json.dumps(verdict_data(verdicts), allow_nan=False))
    assert data["questions"]["wrapping_answer"] == "yes" and data["reproduction"]["claims"][0]["status"] == "supported"
    assert data["comparisons"][0]["outcome"] in ("better", "worse", "tie") and "text" in data["conclusion"]["arms"][0]
