"""Synthetic results with known effects: no training, so report tests are fast and exact.

``make_results``: the lr-only comparison (schema 2 by default; ``schema=1`` strips what schema 1
lacked). ``make_wide_results``: spaces with several hyperparameters of every kind, a prodigy-like
arm whose space fixes the lr, an import-path arm, and ``studies`` repeated tuning studies.
``make_suite``: a suite.json dict over several workloads (see its docstring).
"""

from __future__ import annotations

import copy
import math

import numpy as np

from hessian_lr.results import ArmResults, Results, TrialRecord

EPOCHS = 10
STEPS_PER_EPOCH = 35
# arm -> (tuned lr, early speed, final floor): hessian-adam is faster early, adam ends lower
SHAPES = {"adam": (0.002, 0.35, 1.00), "hessian-adam": (0.004, 0.80, 1.10), "sgd": (0.05, 0.35, 1.002),
          "hessian-sgd": (0.03, 0.60, 0.90), "adamw": (0.002, 0.35, 1.0), "hessian-adamw": (0.003, 0.35, 1.001),
          "hessian-adam-secant": (0.004, 0.80, 0.95), "hessian-adam-hutchinson": (0.004, 0.80, 1.101),
          "prodigy": (1.0, 0.30, 1.05), "my_pkg.mod:MyOpt": (0.01, 0.25, 1.20)}
LR_SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}
TORCH = {"torch": {"distribution": "torch", "version": "2.13.0"}}


def run(arm: str, seed: int, lr: float | None = None, shift: float = 0.0, accuracy: bool = True) -> dict:
    tuned, speed, floor = SHAPES[arm]
    rng = np.random.default_rng([seed, len(arm)])
    noise = rng.normal(0, 0.004, EPOCHS + 1)
    curve = [round(float(floor + shift + (2.3 - floor) * math.exp(-speed * e) + (noise[e] if e else 0.0)), 6)
             for e in range(EPOCHS + 1)]
    curve[0] = 2.3  # same initial weights for every arm at a seed
    return {"lr": lr or tuned, "seed": seed, "epochs": EPOCHS, "val_loss_curve": curve, "val_loss": curve[-1],
            "test_loss": round(curve[-1] + 0.01, 6),
            "test_accuracy": round(0.6 - (floor - 1.0) + noise[1], 6) if accuracy else None,
            "wall_s": 0.5 + 0.01 * seed, "epoch_wall_s": [0.05 * (e + 1) for e in range(EPOCHS)], "diverged": False,
            "hyperparameters": {"lr": lr or tuned}, "steps_per_epoch": STEPS_PER_EPOCH}


def _lr_trials(lr: float) -> list[TrialRecord]:
    return [TrialRecord(number=i, lr=lr * f, value=None if f > 20 else round(1.0 + abs(math.log(f)) / 5, 6),
                        state="FAIL" if f > 20 else "COMPLETE", params={"lr": lr * f})
            for i, f in enumerate((0.3, 1.0, 1.1, 3.0, 30.0))]


def _source(arm: str) -> dict:
    return {"source": "torch.optim" if "hessian" not in arm else "hessian_lr.optim", "description": f"{arm} (synthetic)",
            "step": "plain backward", "second_order": False, "packages": TORCH}


def _final(arm: str, k: int, accuracy: bool = True, shift: float = 0.0) -> dict:
    seeds = [run(arm, s, shift=shift, accuracy=accuracy) for s in range(k)]
    final = dict(seeds[0])
    if k > 1:
        final["seeds"] = seeds
    return final


def make_results(arms=("adam", "hessian-adam"), k: int = 8, ablation: bool = True, schema: int = 2,
                 accuracy: bool = True, workload: str = "mnist1d-mlp") -> tuple[Results, dict | None]:
    optimizers = {}
    for arm in arms:
        lr = SHAPES[arm][0]
        optimizers[arm] = ArmResults(best_lr=lr, best_value=1.0, trials=_lr_trials(lr), final=_final(arm, k, accuracy),
                                     best_params={"lr": lr}, space=dict(LR_SPACE), source=_source(arm))
    config = {"workload": workload, "optimizers": list(arms), "trials": 5, "epochs": EPOCHS, "seed": 0,
              "lr_low": 1e-4, "lr_high": 0.1, "threads": 1, "seeds": k, "ablation": ablation}
    results = Results(config=config, versions={"python": "3.11", "torch": "2.13.0"}, optimizers=optimizers)
    if schema == 1:
        for r in results.optimizers.values():
            r.best_params, r.space, r.source = {}, {}, {}
            for t in r.trials:
                t.params = {}
    runs = None
    if ablation:
        # at another arm's lr each arm is a bit worse (+0.02), except hessian-adam at adam's lr (much worse)
        runs = {a: {b: [run(a, s, lr=SHAPES[b][0], shift=0.2 if (a, b) == ("hessian-adam", "adam") else 0.02,
                            accuracy=accuracy) for s in range(k)] for b in arms if b != a} for a in arms}
    return results, runs


def schema1_dict(results: Results) -> dict:
    """``results.to_dict()`` with everything schema 2 added removed (what an old results.json holds)."""
    data = copy.deepcopy(results.to_dict())
    data["schema"] = 1
    for arm in data["optimizers"].values():
        for key in ("best_params", "space", "source", "studies"):
            arm.pop(key, None)
        for trial in arm["trials"]:
            trial.pop("params", None)
            trial.pop("study", None)
        for seed_run in [arm["final"], *arm["final"].get("seeds", [])]:
            seed_run.pop("hyperparameters", None)
            seed_run.pop("steps_per_epoch", None)
    data["config"].pop("arm_spaces", None)
    return data


# -- a space with several hyperparameters, a fixed lr, an import path, repeated studies --------------------

WIDE_SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
              "betas[1]": {"type": "float", "low": 0.9, "high": 0.9999, "log": False},
              "eps": {"type": "float", "low": 1e-10, "high": 1e-6, "log": True},
              "amsgrad": {"type": "categorical", "choices": [False, True]}}
PRODIGY_SPACE = {"lr": {"type": "fixed", "value": 1.0}, "d_coef": {"type": "float", "low": 0.1, "high": 10.0, "log": True}}
MINE_SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
              "k": {"type": "int", "low": 1, "high": 8, "log": False}}
MINE = "my_pkg.mod:MyOpt"


def _point(arm: str, i: int, study: int) -> dict:
    """The i-th trial's point of a study (deterministic, the objective best at the 2nd trial)."""
    f = (0.3, 1.0, 1.1, 3.0, 30.0)[i]
    if arm == "prodigy":
        return {"lr": 1.0, "d_coef": round(f * (1 + study / 10), 6)}
    lr = SHAPES[arm][0] * f * (1 + study / 10)
    if arm == MINE:
        return {"lr": lr, "k": 1 + i}
    return {"lr": lr, "betas[1]": round(0.9 + 0.02 * i, 6), "eps": 10.0 ** (-9 + i / 2), "amsgrad": i % 2 == 1}


def _wide_arm(arm: str, space: dict, k: int, studies: int) -> ArmResults:
    trials = []
    for study in range(studies):
        for i in range(5):
            value = None if i == 4 else round(1.0 + 0.01 * study + abs(math.log((0.3, 1.0, 1.1, 3.0)[i])) / 5, 6)
            point = _point(arm, i, study)
            trials.append(TrialRecord(number=i, lr=point.get("lr"), value=value,
                                      state="FAIL" if value is None else "COMPLETE", params=point, study=study))
    best = _point(arm, 1, 0)
    params = {name: value for name, value in best.items() if "[" not in name}
    if "betas[1]" in best:
        params["betas"] = [0.9, best["betas[1]"]]
    final = _final(arm, k)
    for seed_run in [final, *final.get("seeds", [])]:
        seed_run["hyperparameters"] = params
    records = [{"study": s, "sampler_seed": s, "best_value": round(1.0 + 0.01 * s, 6), "best_params": _point(arm, 1, s),
                "final": _final(arm, k, shift=0.005 * s)} for s in range(studies)] if studies > 1 else []
    source = {"source": MINE, "description": "MyOpt from my_pkg (synthetic)", "step": "plain backward",
              "second_order": False, "packages": {"my_pkg": {"distribution": None, "version": None}}} \
        if arm == MINE else _source(arm)
    return ArmResults(best_lr=best.get("lr") if space["lr"]["type"] != "fixed" else 1.0, best_value=1.0,
                      trials=trials, final=final, best_params=params, space=space, source=source, studies=records)


def make_wide_results(k: int = 6, studies: int = 3) -> tuple[Results, dict]:
    """adam and hessian-adam on the four-dimension WIDE_SPACE (hessian-adam adds curvature_beta),
    prodigy (lr fixed at 1.0, d_coef tuned) and an import-path arm (lr and an int ``k``); ``studies``
    tuning studies per arm, each with its own final reruns; the ablation runs between the lr arms."""
    hessian_space = {**WIDE_SPACE, "curvature_beta": {"type": "float", "low": 0.9, "high": 0.9999, "log": False}}
    spaces = {"adam": WIDE_SPACE, "hessian-adam": hessian_space, "prodigy": PRODIGY_SPACE, MINE: MINE_SPACE}
    optimizers = {arm: _wide_arm(arm, space, k, studies) for arm, space in spaces.items()}
    for t in optimizers["hessian-adam"].trials:
        t.params["curvature_beta"] = round(0.95 + 0.01 * t.number, 6)
    optimizers["hessian-adam"].best_params["curvature_beta"] = 0.96
    config = {"workload": "mnist1d-mlp", "optimizers": list(spaces), "trials": 5, "epochs": EPOCHS, "seed": 0,
              "lr_low": 1e-4, "lr_high": 0.1, "threads": 1, "seeds": k, "ablation": True, "studies": studies,
              "space": "wide", "spaces": {MINE: MINE_SPACE}, "arm_spaces": spaces}
    results = Results(config=config, versions={"python": "3.11", "torch": "2.13.0", "pytorch_optimizer": "4.1.0"},
                      optimizers=optimizers)
    lr_arms = ("adam", "hessian-adam", MINE)
    runs = {a: {b: [run(a, s, lr=SHAPES[b][0], shift=0.02) for s in range(k)] for b in lr_arms if b != a}
            for a in lr_arms}
    runs["prodigy"] = {}
    return results, runs


# -- a suite ---------------------------------------------------------------------------------------------

FIDELITY = {"checkpoints": [35, 350], "config": {"workload": "w-mlp", "parameters": 15210},
            "estimators": {"grad-diff": {"spearman": [0.85, 0.98], "log_pearson": [0.5, 0.7]},
                           "secant": {"spearman": [0.80, 0.99], "log_pearson": [0.4, 0.8]},
                           "hutchinson": {"spearman": [0.3, 0.5], "log_pearson": [0.2, None]}},
            "skipped": {}}
SUITE_ARMS = ("adam", "hessian-adam", "sgd", "hessian-sgd", "hessian-adam-secant", "hessian-adam-hutchinson")


def make_suite(k: int = 8) -> dict:
    """A suite.json dict over three workloads (nothing summarized yet):

    - ``w-mlp``: every arm of SUITE_ARMS; hessian-adam faster early, adam lower at the end;
      hessian-sgd lower than sgd at the end; hessian-adam-secant lower than grad-diff at the end.
    - ``w-never``: the same arms without the estimator variants and a given target nobody reaches.
    - ``w-regression``: adam, hessian-adam and sgd (hessian-sgd and the estimators did not run), no
      test accuracy, no fidelity.
    """
    def workload(name: str, arms: tuple[str, ...], accuracy: bool = True) -> dict:
        results, runs = make_results(arms=arms, k=k, ablation=False, accuracy=accuracy, workload=name)
        return results.to_dict()

    workloads = {"w-mlp": workload("w-mlp", SUITE_ARMS),
                 "w-never": workload("w-never", SUITE_ARMS[:4]),
                 "w-regression": workload("w-regression", ("adam", "hessian-adam", "sgd"), accuracy=False)}
    workloads["w-never"]["target"] = {"value": 0.1, "rule": "given", "arm": None}
    return {"schema": 1, "config": {"workloads": list(workloads), "optimizers": list(SUITE_ARMS), "trials": 5,
                                    "seeds": k, "studies": 1, "space": "default"},
            "versions": {"python": "3.11", "torch": "2.13.0"}, "workloads": workloads,
            "fidelity": {"w-mlp": FIDELITY, "w-never": {**FIDELITY, "config": {"workload": "w-never"}}}}


def shift_curves(results: Results, arm: str, delta: float, epochs: range) -> Results:
    """Add ``delta`` to ``arm``'s validation loss at ``epochs`` in every seed (final loss too when the
    last epoch is shifted): turns a known effect around before ``summarize``."""
    for seed_run in results.optimizers[arm].final["seeds"]:
        curve = seed_run["val_loss_curve"]
        for epoch in epochs:
            curve[epoch] = round(curve[epoch] + delta, 6)
        seed_run["val_loss"] = curve[-1]
    return results


def shift_suite(suite: dict, workload: str, arm: str, delta: float, epochs: range) -> dict:
    """``shift_curves`` on one arm of one workload of a suite dict (returns a new dict)."""
    suite = copy.deepcopy(suite)
    for seed_run in suite["workloads"][workload]["optimizers"][arm]["final"]["seeds"]:
        for epoch in epochs:
            seed_run["val_loss_curve"][epoch] = round(seed_run["val_loss_curve"][epoch] + delta, 6)
        seed_run["val_loss"] = seed_run["val_loss_curve"][-1]
    return suite
