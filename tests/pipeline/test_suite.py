"""The suite end to end at tiny sizes: every workload's comparison and fidelity study, one
suite.json and report, resumable without redoing work, and refused bad input."""

from __future__ import annotations

import json

import pytest

from hessian_lr.pipeline.suite import SuiteConfig, parse_workloads, run_suite
from hessian_lr.workloads import get_workload
from results_helpers import without_timing

WORKLOADS = ("noisy-quadratic", "digits-softmax")


def tiny(out, **changes) -> SuiteConfig:
    settings = dict(workloads=WORKLOADS, optimizers=("adam", "hessian-adam"), trials=2, seeds=2, workers=1,
                    out=out)
    settings.update(changes)
    return SuiteConfig(**settings)


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    return out, run_suite(tiny(out))


def test_writes_every_workload_and_the_suite_report(suite_run):
    out, suite = suite_run
    data = json.loads((out / "suite.json").read_text())
    assert list(data["workloads"]) == list(WORKLOADS) and set(data["fidelity"]) == set(WORKLOADS)
    for name in WORKLOADS:
        results = data["workloads"][name]
        assert results["config"]["workload"] == name and list(results["optimizers"]) == ["adam", "hessian-adam"]
        assert (out / name / "results.json").exists() and (out / name / "report.md").exists()
        assert results["config"]["storage"] == str(out / "optuna.journal")  # one storage for the suite
        assert data["wall_s"][name] > 0
    assert data["config"]["seeds"] == 2 and data["config"]["ablation"] is False
    assert "summary" in data  # profiles, win/tie/loss and the conclusion, computed from the workloads
    for name in ("suite.md", "suite.html", "profiles.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "suite.md").read_text()
    for name in WORKLOADS:
        assert name in report


def test_the_same_command_again_redoes_nothing_and_gives_the_same_suite(suite_run):
    out, _ = suite_run
    runs = {p: p.stat().st_mtime_ns for p in out.glob("*/runs/*.json")}
    fidelity = {p: p.stat().st_mtime_ns for p in out.glob("*/fidelity/fidelity.json")}
    before = json.loads((out / "suite.json").read_text())
    run_suite(tiny(out))
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/runs/*.json")} == runs
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/fidelity/fidelity.json")} == fidelity
    assert without_timing(json.loads((out / "suite.json").read_text())) == without_timing(before)


def test_workloads_are_parsed_and_bad_ones_refused_before_anything_runs(tmp_path):
    assert parse_workloads("noisy-quadratic, digits-softmax") == WORKLOADS
    assert "mnist1d-mlp" in parse_workloads("all") and len(parse_workloads("all")) >= 9
    for bad, fragment in ((" ", "at least one"), ("mnist1d-mlp,imagenet", r"unknown workload\(s\) imagenet"),
                          (5, "'all' or a comma-separated list")):
        with pytest.raises(ValueError, match=fragment):
            SuiteConfig(workloads=bad, out=tmp_path)
    with pytest.raises(ValueError, match="trials must be an integer"):
        SuiteConfig(workloads=WORKLOADS, trials=0, out=tmp_path)
    with pytest.raises(ValueError, match="fidelity must be true or false"):
        SuiteConfig(workloads=WORKLOADS, fidelity="yes", out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_every_workload_shares_the_arms_spaces_and_seeds(tmp_path):
    config = tiny(tmp_path, space="wide", seeds=3, studies=2)
    for name in WORKLOADS:
        compare = config.compare_config(name)
        assert compare.workload == name and compare.out == tmp_path / name
        assert (compare.space, compare.seeds, compare.studies, compare.ablation) == ("wide", 3, 2, False)
        assert compare.epochs == get_workload(name).epochs  # each workload trains for its own budget


SUITE_ARGS = ["suite", "--workloads", ",".join(WORKLOADS), "--optimizers", "adam,hessian-adam", "--trials", "3",
              "--seeds", "2", "--workers", "1", "--batch-trials", "1", "--no-batch-startup", "--quiet"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from announced import run_ok

    reference = tmp_path_factory.mktemp("uninterrupted")
    run_ok([*SUITE_ARGS, "--out", str(reference)])
    return reference


@pytest.mark.parametrize("event", ["trial-told *#8", "final-saved *#7"])
def test_a_suite_killed_and_rerun_gives_the_suite_json_of_an_uninterrupted_run(uninterrupted, tmp_path, event):
    """SIGKILL the suite (plain sequential mode) where it announces ``event`` — in the second
    workload's tuning (the first one's outputs written), in its finals — and run the same command
    again: suite.json is the uninterrupted run's (timings aside)."""
    from announced import Announced, run_ok

    reference = uninterrupted
    out = tmp_path / "killed"
    with Announced([*SUITE_ARGS, "--out", str(out)], hold=[event]) as run:
        run.wait_for(event.split("#")[0], count=int(event.split("#")[1]))
        run.kill()
    assert not (out / "suite.json").exists()
    run_ok([*SUITE_ARGS, "--out", str(out)])

    def comparable(folder):
        data = without_timing(json.loads((folder / "suite.json").read_text()))
        # the conclusion's sentence on the wall-seconds profile quotes timings too
        data["summary"]["conclusion"]["overall"] = [line for line in data["summary"]["conclusion"]["overall"]
                                                    if "wall seconds" not in line]
        return json.loads(json.dumps(data).replace(str(folder), "OUT"))

    assert comparable(out) == comparable(reference)


def test_repeated_studies_show_the_tuning_luck_in_the_suite_report(tmp_path):
    suite = run_suite(tiny(tmp_path, workloads=("digits-softmax",), trials=3, seeds=2, studies=2, fidelity=False))
    studies = suite["workloads"]["digits-softmax"]["optimizers"]["adam"]["studies"]
    assert [s["study"] for s in studies] == [0, 1] and [s["sampler_seed"] for s in studies] == [0, 1]
    report = (tmp_path / "suite.md").read_text()
    assert "## Tuning luck" in report and "| digits-softmax | hessian-adam | 2 |" in report


# -- the question presets ------------------------------------------------------------------------------------

ESTIMATORS_PRESET = ("adam", "sgd",
                     "hessian-adam", "hessian-adam-squared-grad", "hessian-adam-secant", "hessian-adam-secant-rms",
                     "hessian-adam-hutchinson", "hessian-adam-gauss-newton",
                     "hessian-sgd", "hessian-sgd-squared-grad", "hessian-sgd-secant", "hessian-sgd-secant-rms",
                     "hessian-sgd-hutchinson", "hessian-sgd-gauss-newton")
BASES_PRESET = ("adam", "sgd", "adamw", "lion", "adabelief", "soap",
                "hessian-adam", "hessian-sgd", "hessian-adamw", "hessian-lion", "hessian-adabelief", "hessian-soap")


def test_the_question_presets_name_every_estimator_and_every_base():
    from hessian_lr.optim.estimators import ESTIMATORS
    from hessian_lr.pipeline.suite import fidelity_estimators, question_arms

    assert set(ESTIMATORS) == {"grad-diff", "squared-grad", "secant", "secant-rms", "hutchinson", "gauss-newton"}
    assert question_arms("estimators") == ESTIMATORS_PRESET and question_arms("bases") == BASES_PRESET
    assert set(fidelity_estimators(ESTIMATORS_PRESET)) == set(ESTIMATORS)  # fidelity for every estimator trained
    with pytest.raises(ValueError, match="question must be one of estimators, bases, got 'optimizers'"):
        question_arms("optimizers")


def test_the_fidelity_study_covers_declared_arms_and_skips_workloads_without_an_exact_route(tmp_path):
    from hessian_lr.analysis.fidelity import DEFAULT_ESTIMATORS
    from hessian_lr.pipeline.suite import SuiteConfig, _fidelity, fidelity_estimators

    config = SuiteConfig(workloads=("noisy-quadratic",), optimizers=("adam", "hutch"),
                         arms={"hutch": {"base": "sgd", "estimator": "hutchinson", "update_every": 10}},
                         out=tmp_path)
    wanted = fidelity_estimators(config.optimizers, config.compare_config("noisy-quadratic").arm)
    assert "hutchinson" in wanted and set(DEFAULT_ESTIMATORS) <= set(wanted)
    assert _fidelity(config, "shakespeare-char-gpt-cpu") is None
    assert not (tmp_path / "shakespeare-char-gpt-cpu").exists()  # nothing computed, nothing written


def test_a_question_sets_the_arms_and_refuses_other_optimizers(tmp_path):
    from hessian_lr.pipeline.suite import DEFAULT_OPTIMIZERS

    config = SuiteConfig(question="estimators", workloads=WORKLOADS, out=tmp_path)
    assert config.optimizers == ESTIMATORS_PRESET and config.to_dict()["question"] == "estimators"
    assert config.compare_config("digits-softmax").optimizers == ESTIMATORS_PRESET
    named = SuiteConfig(question="estimators", optimizers=list(ESTIMATORS_PRESET), workloads=WORKLOADS, out=tmp_path)
    assert named.optimizers == ESTIMATORS_PRESET  # naming exactly the question's arms is no conflict
    plain = SuiteConfig(workloads=WORKLOADS, out=tmp_path)
    assert plain.optimizers == DEFAULT_OPTIMIZERS and plain.to_dict()["question"] is None
    with pytest.raises(ValueError, match="optimizers conflict with question 'estimators', which runs its own arms"):
        SuiteConfig(question="estimators", optimizers=("adam", "sgd"), workloads=WORKLOADS, out=tmp_path)
    with pytest.raises(ValueError, match="question must be one of estimators, bases, got 'lr'"):
        SuiteConfig(question="lr", workloads=WORKLOADS, out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_the_question_on_the_command_line_and_in_a_config_file(tmp_path, capsys):
    from hessian_lr.cli import main

    toml = tmp_path / "q.toml"
    toml.write_text('question = "estimators"\noptimizers = "adam,sgd"\n')
    for args in (["--question", "estimators", "--optimizers", "adam,sgd"], ["--config", str(toml)]):
        assert main(["suite", "--out", str(tmp_path / "run"), "--workloads", "digits-softmax", "--quiet", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hessian-lr: error: optimizers conflict with question 'estimators'") and "\n" not in err
    assert main(["suite", "--question", "everything", "--quiet"]) == 2
    assert "argument --question: invalid choice: 'everything'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("question", ["estimators", "bases"])
def test_both_questions_end_to_end_on_two_small_workloads(tmp_path, question):
    """``question=`` on two workloads with 2 trials and 2 seeds (the command line's ``--question`` is the
    same setting): every preset arm trained on both, the question and its answers in suite.json, and
    the report's sections."""
    out = tmp_path / question
    run_suite(tiny(out, question=question, optimizers=None, workers=0))
    data = json.loads((out / "suite.json").read_text())
    preset = ESTIMATORS_PRESET if question == "estimators" else BASES_PRESET
    assert data["config"]["question"] == question and data["summary"]["question"] == question
    for name in WORKLOADS:
        assert tuple(data["workloads"][name]["optimizers"]) == preset
    answers = data["summary"]["answers"]
    assert answers["beats_adam"]["reference"] == "adam" and len(answers["beats_adam"]["arms"]) == len(preset) - 1
    report = (out / "suite.md").read_text()
    assert "## Question" in report and "## Anything that beats a tuned adam?" in report
    if question == "estimators":
        study = answers["estimator_study"]
        assert {(c["workload"], c["base"]) for c in study["cells"]} == {(w, b) for w in WORKLOADS
                                                                        for b in ("adam", "sgd")}
        # gauss-newton has no fidelity on the regression workload (its samples need a softmax)
        left_out = {g["workload"]: tuple(g["left_out"]) for g in study["groups"]}
        assert left_out == {"noisy-quadratic": ("gauss-newton",), "digits-softmax": ()}
        assert [p["scope"] for p in study["pooled"]] == ["adam", "sgd", "all"]
        assert "### Does fidelity predict training?" in report and (out / "fidelity_training.png").exists()
    else:
        study = answers["base_study"]
        assert [t["base"] for t in study["tallies"]] == list(preset[:6])
        assert "## Which base optimizers gain?" in report
