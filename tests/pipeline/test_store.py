"""Final-run keys: what makes a stored run the run asked for."""

from __future__ import annotations

from pathlib import Path

from hessian_lr.config import CompareConfig
from hessian_lr.pipeline.compare import plan_final_runs
from hessian_lr.pipeline.store import FinalRun


def test_an_undeclared_arm_keeps_the_key_runs_were_stored_under() -> None:
    run = FinalRun.of("adam", {"lr": 0.001}, seed=3, epochs=20, workload="mnist1d-mlp")
    assert run.key == "mnist1d-mlp.adam.lr0.001.hpbb90828f77b3.seed3.e20"


def test_a_declared_arm_redeclared_under_the_same_name_is_another_run(tmp_path: Path) -> None:
    def finals(table: dict) -> list[FinalRun]:
        config = CompareConfig(optimizers=("adam", "mine"), arms={"mine": table}, seeds=2, ablation=False,
                               out=tmp_path)
        return plan_final_runs(config, {"adam": {"lr": 0.01}, "mine": {"lr": 0.01}})["mine"]["mine"]

    secant = finals({"base": "adam", "estimator": "secant"})
    squared = finals({"base": "adam", "estimator": "squared-grad"})
    assert [r.hyperparameters for r in secant] == [r.hyperparameters for r in squared]  # same lr, same seeds
    assert {r.key for r in secant}.isdisjoint(r.key for r in squared)
    assert secant == finals({"base": "adam", "estimator": "secant"})  # the same declaration: the same runs
    assert all(".d" in r.key for r in secant)
