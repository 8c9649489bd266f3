"""The comparison pipeline end to end, at tiny sizes."""

from __future__ import annotations

import csv
import json

import pytest

from hessian_lr.config import CompareConfig
from hessian_lr.pipeline import run_compare
from hessian_lr.pipeline.outputs import write_outputs
from hessian_lr.results import Results
from results_helpers import without_timing


def tiny(out, **changes) -> CompareConfig:
    settings = dict(trials=2, epochs=2, out=out, workers=1, seeds=1, ablation=False)
    settings.update(changes)
    return CompareConfig(**settings)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    run_compare(tiny(out))
    return out


def test_writes_all_four_outputs_with_the_schema(tiny_run):
    data = json.loads((tiny_run / "results.json").read_text())
    assert set(data["versions"]) == {"python", "torch", "optuna", "numpy", "scipy", "mnist1d", "hessian-lr"}
    assert data["config"]["trials"] == 2 and data["config"]["threads"] == 1
    assert data["config"]["arm_spaces"]["adam"] == {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}
    assert list(data["optimizers"]) == ["adam", "hessian-adam"]
    for name, arm in data["optimizers"].items():
        assert len(arm["trials"]) == 2
        assert set(arm["trials"][0]) == {"number", "lr", "params", "value", "state", "study"}
        assert arm["trials"][0]["params"] == {"lr": arm["trials"][0]["lr"]}
        assert arm["best_params"] == {"lr": arm["best_lr"]} and arm["space"] == data["config"]["arm_spaces"][name]
        assert arm["source"]["packages"]["torch"]["version"] == data["versions"]["torch"]
        assert arm["best_lr"] == min((t for t in arm["trials"] if t["value"] is not None),
                                     key=lambda t: t["value"])["lr"]
        final = arm["final"]
        assert len(final["val_loss_curve"]) == 3 and final["val_loss"] == final["val_loss_curve"][-1]
        assert {"test_loss", "test_accuracy", "wall_s"} <= set(final) and final["steps_per_epoch"] == 35
        assert final["hyperparameters"] == arm["best_params"]
        assert 1e-4 <= arm["best_lr"] <= 1e-1
    rows = list(csv.DictReader((tiny_run / "trials.csv").open()))
    assert len(rows) == 4 and {r["optimizer"] for r in rows} == {"adam", "hessian-adam"}
    assert (tiny_run / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tiny_run / "report.md").read_text()
    for section in ("## Hypothesis", "## Method", "## Tuned learning rates", "## Results", "## Conclusion"):
        assert section in report
    assert f"{data['optimizers']['adam']['best_lr']:.5f}" in report


def test_same_seed_twice_gives_identical_numbers(tiny_run, tmp_path):
    again = tmp_path / "again"
    run_compare(tiny(again))
    first = json.loads((tiny_run / "results.json").read_text())
    second = json.loads((again / "results.json").read_text())
    assert without_timing(first) == without_timing(second)


def test_parallel_workers_give_the_same_numbers_as_one_process(tiny_run, tmp_path):
    parallel = tmp_path / "parallel"
    run_compare(tiny(parallel, workers=2))
    first = json.loads((tiny_run / "results.json").read_text())
    second = json.loads((parallel / "results.json").read_text())
    assert without_timing(first) == without_timing(second)


def test_rerun_resumes_and_extends_without_redoing_work(tmp_path):
    out = tmp_path / "run"
    run_compare(tiny(out, optimizers=("adam",)))
    finals = {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    first = json.loads((out / "results.json").read_text())
    run_compare(tiny(out, optimizers=("adam",)))  # same command: nothing retrained
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == finals
    assert without_timing(json.loads((out / "results.json").read_text())) == without_timing(first)
    extended = run_compare(tiny(out, optimizers=("adam",), trials=3))
    trials = extended.optimizers["adam"].trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.lr for t in trials[:2]] == [t["lr"] for t in first["optimizers"]["adam"]["trials"]]


def test_a_changed_budget_starts_a_new_study(tmp_path):
    out = tmp_path / "run"
    run_compare(tiny(out, optimizers=("adam",)))
    longer = run_compare(tiny(out, optimizers=("adam",), epochs=3))
    assert len(longer.optimizers["adam"].final["val_loss_curve"]) == 4
    assert len(longer.optimizers["adam"].trials) == 2


def test_report_is_rebuilt_identically_from_results(tiny_run, tmp_path):
    results = Results.from_dict(json.loads((tiny_run / "results.json").read_text()))
    write_outputs(results, tmp_path)
    for name in ("report.md", "report.html", "trials.csv", "results.json", "comparison.png", "curves.png"):
        assert (tmp_path / name).read_bytes() == (tiny_run / name).read_bytes(), name


def test_two_runs_cannot_share_a_folder(tmp_path):
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another hessian-lr process"):
            run_compare(tiny(out))


def test_ablation_schedule_trains_every_arm_at_every_tuned_lr_with_paired_seeds(tmp_path):
    from hessian_lr.pipeline.compare import plan_final_runs

    config = tiny(tmp_path, optimizers=("adam", "hessian-adam", "sgd"), seeds=3, seed=5, ablation=True)
    lrs = {"adam": 1e-3, "hessian-adam": 2e-3, "sgd": 3e-2}
    plan = plan_final_runs(config, {arm: {"lr": lr} for arm, lr in lrs.items()})
    assert set(plan) == {"adam", "hessian-adam", "sgd"}
    for arm, sources in plan.items():
        assert set(sources) == {"adam", "hessian-adam", "sgd"}
        for source, specs in sources.items():
            assert [s.seed for s in specs] == [5, 6, 7]
            assert all(s.arm == arm and s.hyperparameters == {"lr": lrs[source]} for s in specs)
    without = plan_final_runs(tiny(tmp_path, seeds=2), {"adam": {"lr": 1e-3}, "hessian-adam": {"lr": 2e-3}})
    assert {arm: list(sources) for arm, sources in without.items()} == {"adam": ["adam"],
                                                                         "hessian-adam": ["hessian-adam"]}


def test_ablation_swaps_only_the_lr_and_skips_arms_whose_space_fixes_it(tmp_path):
    from hessian_lr.pipeline.compare import plan_final_runs

    spaces = {"adam": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "eps": {"low": 1e-10, "high": 1e-6, "log": True}}}
    config = tiny(tmp_path, optimizers=("adam", "sgd", "prodigy"), seeds=1, ablation=True, spaces=spaces)
    best = {"adam": {"lr": 1e-3, "eps": 1e-9}, "sgd": {"lr": 0.05}, "prodigy": {"lr": 1.0, "d_coef": 2.0}}
    plan = plan_final_runs(config, best)
    assert plan["adam"]["sgd"][0].hyperparameters == {"lr": 0.05, "eps": 1e-9}
    assert set(plan["adam"]) == {"adam", "sgd"} and set(plan["prodigy"]) == {"prodigy"}
    assert plan["prodigy"]["prodigy"][0].hyperparameters == {"lr": 1.0, "d_coef": 2.0}


def test_seeds_and_ablation_end_to_end(tmp_path):
    results = run_compare(tiny(tmp_path, seeds=2, ablation=True, workers=2))
    data = json.loads((tmp_path / "results.json").read_text())
    for arm, other in (("adam", "hessian-adam"), ("hessian-adam", "adam")):
        seeds = data["optimizers"][arm]["final"]["seeds"]
        assert [run["seed"] for run in seeds] == [0, 1]
        ablation = data["ablation"]["runs"][arm][other]
        assert [run["lr"] for run in ablation] == [results.optimizers[other].best_lr] * 2
        assert [run["seed"] for run in ablation] == [0, 1]
    # paired: seed k gives both arms the same initial weights
    for k in range(2):
        assert (data["optimizers"]["adam"]["final"]["seeds"][k]["val_loss_curve"][0]
                == data["optimizers"]["hessian-adam"]["final"]["seeds"][k]["val_loss_curve"][0])


def test_batched_trials_complete_the_budget_and_match_sequential_at_stable_lrs(tmp_path):
    """Batches of trials come from TPE with constant liar, so their lrs differ from sequential
    mode's; the runs themselves match sequential training at the same lr to float tolerance."""
    from hessian_lr.arms import get_arm
    from hessian_lr.training import train_run
    from hessian_lr.workloads import get_workload

    config = tiny(tmp_path, trials=4, batch_trials=2, seeds=2, lr_high=2e-3)
    results = run_compare(config)
    for arm, arm_results in results.optimizers.items():
        assert len(arm_results.trials) == 4 and len({t.lr for t in arm_results.trials}) == 4
        final = arm_results.final["seeds"][1]
        sequential = train_run(get_workload(config.workload), get_arm(arm), final["hyperparameters"], epochs=2, seed=1)
        assert final["val_loss_curve"] == pytest.approx(sequential.val_loss_curve, rel=1e-4)


def test_batched_startup_asks_the_same_lrs_as_one_by_one(tmp_path):
    """TPE's random start-up draws depend only on the seed: asked together they are the same lrs,
    and their batched training matches sequential training at stable lrs."""
    settings = dict(trials=3, optimizers=("hessian-adam",), lr_high=2e-3)
    together = run_compare(tiny(tmp_path / "together", batch_startup=True, **settings))
    one_by_one = run_compare(tiny(tmp_path / "one", batch_startup=False, **settings))
    a, b = together.optimizers["hessian-adam"].trials, one_by_one.optimizers["hessian-adam"].trials
    assert [t.lr for t in a] == [t.lr for t in b]
    assert [t.value for t in a] == pytest.approx([t.value for t in b], rel=1e-4)


def test_lanes_run_items_at_once_in_order_and_raise_the_first_error():
    import threading

    from hessian_lr.pipeline.execution import ProgressEvent, in_lanes

    barrier = threading.Barrier(2, timeout=10)  # both items must be running at the same moment

    def both_at_once(n, progress):
        barrier.wait()
        return n * 10

    def plain(n, progress):
        return n

    assert in_lanes(2, both_at_once, [1, 2], print) == [10, 20]
    assert in_lanes(2, plain, list(range(7)), print) == list(range(7))
    assert in_lanes(1, lambda n, progress: threading.current_thread().name, [0, 1], print) == ["MainThread"] * 2

    reports = []

    def fail_fast_or_report(n, progress):
        if n == 1:
            raise RuntimeError("item 1")
        for epoch in range(1000):  # stopped at a report once item 1 has failed
            progress(ProgressEvent("x", "epoch"))
            reports.append(n)
            threading.Event().wait(0.01)
        return n

    with pytest.raises(RuntimeError, match="item 1"):
        in_lanes(2, fail_fast_or_report, [0, 1, 2, 3], lambda event: None)
    assert len(reports) < 1000 and 2 not in reports and 3 not in reports  # the others stopped, none started


def test_arms_in_lanes_give_the_numbers_of_one_lane(tmp_path, monkeypatch):
    """Lanes only change which thread trains an arm: every number but the timings is identical."""
    settings = dict(trials=3, batch_trials=2, threads=1, lr_high=2e-3)
    monkeypatch.setattr(CompareConfig, "lanes", property(lambda self: 2))
    both = run_compare(tiny(tmp_path / "lanes", **settings))
    monkeypatch.setattr(CompareConfig, "lanes", property(lambda self: 1))
    one = run_compare(tiny(tmp_path / "one", **settings))
    assert without_timing(both.to_dict()) == without_timing(one.to_dict())
