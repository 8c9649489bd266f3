"""Synthetic results with known effects: no training, so report tests are fast and exact."""

from __future__ import annotations

import math

import numpy as np


from hessian_lr.results import ArmResults, Results, TrialRecord

EPOCHS = 10
# arm -> (tuned lr, early speed, final floor): hessian-adam is faster early, adam ends lower
SHAPES = {"adam": (0.002, 0.35, 1.00), "hessian-adam": (0.004, 0.80, 1.10), "sgd": (0.05, 0.35, 1.002)}


def run(arm: str, seed: int, lr: float | None = None, shift: float = 0.0) -> dict:
    tuned, speed, floor = SHAPES[arm]
    rng = np.random.default_rng([seed, len(arm)])
    noise = rng.normal(0, 0.004, EPOCHS + 1)
    curve = [round(float(floor + shift + (2.3 - floor) * math.exp(-speed * e) + (noise[e] if e else 0.0)), 6)
             for e in range(EPOCHS + 1)]
    curve[0] = 2.3  # same initial weights for every arm at a seed
    return {"lr": lr or tuned, "seed": seed, "epochs": EPOCHS, "val_loss_curve": curve, "val_loss": curve[-1],
            "test_loss": round(curve[-1] + 0.01, 6), "test_accuracy": round(0.6 - (floor - 1.0) + noise[1], 6),
            "wall_s": 0.5 + 0.01 * seed, "epoch_wall_s": [0.05 * (e + 1) for e in range(EPOCHS)], "diverged": False}


def make_results(arms=("adam", "hessian-adam"), k: int = 8, ablation: bool = True) -> tuple[Results, dict | None]:
    optimizers = {}
    for arm in arms:
        lr = SHAPES[arm][0]
        seeds = [run(arm, s) for s in range(k)]
        final = dict(seeds[0])
        if k > 1:
            final["seeds"] = seeds
        trials = [TrialRecord(number=i, lr=lr * f, value=None if f > 20 else round(1.0 + abs(math.log(f)) / 5, 6),
                              state="FAIL" if f > 20 else "COMPLETE")
                  for i, f in enumerate((0.3, 1.0, 1.1, 3.0, 30.0))]
        optimizers[arm] = ArmResults(best_lr=lr, best_value=1.0, trials=trials, final=final)
    config = {"workload": "mnist1d-mlp", "optimizers": list(arms), "trials": 5, "epochs": EPOCHS, "seed": 0,
              "lr_low": 1e-4, "lr_high": 0.1, "threads": 1, "seeds": k, "ablation": ablation}
    results = Results(config=config, versions={"python": "3.11", "torch": "2.13.0"}, optimizers=optimizers)
    runs = None
    if ablation:
        # at another arm's lr each arm is a bit worse (+0.02), except hessian-adam at adam's lr (much worse)
        runs = {a: {b: [run(a, s, lr=SHAPES[b][0], shift=0.2 if (a, b) == ("hessian-adam", "adam") else 0.02)
                        for s in range(k)] for b in arms if b != a} for a in arms}
    return results, runs


def shift_curves(results: Results, arm: str, delta: float, epochs: range) -> Results:
    """Add ``delta`` to ``arm``'s validation loss at ``epochs`` in every seed (final loss too when the
    last epoch is shifted): turns a known effect around before ``summarize``."""
    for seed_run in results.optimizers[arm].final["seeds"]:
        curve = seed_run["val_loss_curve"]
        for epoch in epochs:
            curve[epoch] = round(curve[epoch] + delta, 6)
        seed_run["val_loss"] = curve[-1]
    return results
