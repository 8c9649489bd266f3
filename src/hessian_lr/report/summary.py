"""Seed statistics of a comparison, computed from ``Results`` alone (and the ablation runs).

``summarize(results, ablation_runs)`` fills, in place:

- per arm, ``results.optimizers[arm].summary`` (written flat into the arm's dict in results.json):
  ``n_seeds``, ``n_diverged``, ``val_loss_mean/_std/_ci95``, ``test_loss_mean/_std/_ci95``,
  ``test_accuracy_mean/_std/_ci95``, ``time_to_target_epochs`` / ``time_to_target_wall_s`` (one
  entry per seed, ``None`` = never reached), ``reached_target``, ``curve_mean`` / ``curve_ci95``
  (validation loss per epoch over the seeds that had not diverged), ``epoch_s_mean``;
- ``results.extra["target"]``: ``{value, rule, arm}``;
- ``results.extra["pairwise"]``: ``{baseline, epochs, comparisons: [{arm, baseline, metric, epoch,
  n, missing, mean_diff, std_diff, ci95, p_t, p_wilcoxon, p_holm}]}``: differences are
  ``arm - baseline`` paired by seed; Holm's correction runs over the arms of each (metric, epoch);
- ``results.extra["ablation"]`` (when there are ablation runs): ``{runs, cells, equal_lr}``;
- ``results.extra["sensitivity"]``: per arm and tuned hyperparameter, the values of the trials
  within ``NEAR_BEST`` of the arm's best trial (over every study's trials) and where trials diverged.

The baseline is the first arm named (``config.optimizers[0]``, the first key of
``results.optimizers``): every difference is ``arm - baseline``, and the target comes from its seeds.
A metric no run recorded (``test_accuracy`` on a regression workload) gets no comparison rows.

It is idempotent: run on its own output (read back from results.json, ablation runs included)
it produces the same numbers, so ``hessian-lr report DIR`` can call it again.
"""

from __future__ import annotations

from typing import Any

from hessian_lr.report.spaces import arm_space, best_trial, is_categorical, trial_point, tuned_names, value_text
from hessian_lr.results import ArmResults, Results
from hessian_lr.stats import describe, holm, median, paired, time_to_target

__all__ = ["summarize", "seed_runs", "seed_values", "paired_rows", "baseline_arm", "comparison_epochs", "early_epoch",
           "sensitivity", "NEAR_BEST"]

NEAR_BEST = 0.05  # sensitivity: trials whose objective is within 5% of the best


def early_epoch(epochs: int) -> int:
    """The epoch the report calls "early": the first fifth of the budget (at least epoch 1)."""
    return max(1, round(epochs / 5))


def comparison_epochs(epochs: int) -> list[int]:
    """Epochs of the paired comparisons: 1, the early epoch, 5, 10 and the last (those that exist)."""
    return sorted({e for e in (1, early_epoch(epochs), 5, 10, epochs) if 1 <= e <= epochs})


def seed_runs(arm_final: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-seed run dicts of an arm; a single-seed result (no ``seeds``) is its own only seed."""
    seeds = arm_final.get("seeds")
    return list(seeds) if seeds else [{k: v for k, v in arm_final.items() if k != "seeds"}]


def baseline_arm(arms: list[str]) -> str:
    """The baseline: the first optimizer named (compare's and the suite's ``config.optimizers[0]``)."""
    if not arms:
        raise ValueError("no arms: a comparison needs at least one optimizer")
    return arms[0]


def _at(run: dict[str, Any], epoch: int) -> float | None:
    curve = run["val_loss_curve"]
    return curve[epoch] if epoch < len(curve) else None


def seed_values(arm: ArmResults, metric: str, epoch: int) -> list[float | None]:
    """Per seed, ``metric`` of the arm's final runs: ``val_loss`` at ``epoch`` (from the curve), or a
    run-level value (``test_loss``, ``test_accuracy``); ``None`` where a run lacks it."""
    runs = seed_runs(arm.final)
    return [_at(r, epoch) for r in runs] if metric == "val_loss" else [r.get(metric) for r in runs]


def paired_rows(results: Results, pairs: list[tuple[str, str]], metric: str, epoch: int) -> list[dict[str, Any]]:
    """``arm - other`` paired by seed index for each ``(arm, other)``, Holm's correction over the pairs.

    Returns:
        One row per pair: ``{arm, baseline (= other), metric, epoch, n, missing, mean_diff, std_diff,
        ci95, p_t, p_wilcoxon, p_holm}``.
    """
    tests = []
    for arm, other in pairs:
        mine, theirs = (seed_values(results.optimizers[a], metric, epoch) for a in (arm, other))
        n = min(len(mine), len(theirs))
        tests.append(paired(mine[:n], theirs[:n]))
    adjusted = holm([t.p_t for t in tests])
    return [{"arm": arm, "baseline": other, "metric": metric, "epoch": epoch, **t.to_dict(), "p_holm": p}
            for (arm, other), t, p in zip(pairs, tests, adjusted)]


def _describe_into(out: dict[str, Any], name: str, values: list[float | None]) -> None:
    d = describe(values)
    out[f"{name}_mean"], out[f"{name}_std"], out[f"{name}_ci95"] = d.mean, d.std, d.ci95


def _arm_summary(runs: list[dict[str, Any]], epochs: int, target: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"n_seeds": len(runs), "n_diverged": sum(bool(r.get("diverged")) for r in runs)}
    _describe_into(out, "val_loss", [r.get("val_loss") for r in runs])
    _describe_into(out, "test_loss", [r.get("test_loss") for r in runs])
    _describe_into(out, "test_accuracy", [r.get("test_accuracy") for r in runs])
    hits = [time_to_target(r["val_loss_curve"], target, r.get("epoch_wall_s") or []) for r in runs]
    out["time_to_target_epochs"] = [h[0] for h in hits]
    out["time_to_target_wall_s"] = [h[1] for h in hits]
    out["reached_target"] = sum(h[0] is not None for h in hits)
    per_epoch = [describe([_at(r, e) for r in runs]) for e in range(epochs + 1)]
    out["curve_mean"] = [d.mean for d in per_epoch]
    out["curve_ci95"] = [d.ci95 for d in per_epoch]
    per_epoch_s = [r["wall_s"] / len(r["epoch_wall_s"]) for r in runs if r.get("epoch_wall_s")]
    out["epoch_s_mean"] = describe(per_epoch_s).mean
    return out


def _pairwise(results: Results, epochs: int) -> dict[str, Any]:
    arms = list(results.optimizers)
    base = baseline_arm(arms)
    pairs = [(a, base) for a in arms if a != base]
    families = [("val_loss", epoch) for epoch in comparison_epochs(epochs)]
    for metric in ("test_loss", "test_accuracy"):
        if any(v is not None for a in arms for v in seed_values(results.optimizers[a], metric, epochs)):
            families.append((metric, epochs))  # a metric never recorded (regression: no accuracy) is left out
    rows = [row for metric, epoch in families for row in paired_rows(results, pairs, metric, epoch)]
    return {"baseline": base, "epochs": comparison_epochs(epochs), "correction": "holm over arms per metric and epoch",
            "comparisons": rows}


def _ablation(results: Results, ablation_runs: dict[str, dict[str, list[dict]]]) -> dict[str, Any]:
    """``cells``: each arm at each other arm's tuned lr (final validation loss, test accuracy).
    ``equal_lr``: at arm B's tuned lr, arm A (trained at that lr) minus arm B, paired by seed, in
    validation loss at the early epoch and at the last."""
    arms = list(results.optimizers)
    epochs = int(results.config["epochs"])
    own = {arm: seed_runs(results.optimizers[arm].final) for arm in arms}
    cells, equal_lr = [], []
    for arm in arms:
        for lr_of in arms:
            runs = own[arm] if lr_of == arm else ablation_runs.get(arm, {}).get(lr_of)
            if not runs:
                continue
            val, acc = describe([r.get("val_loss") for r in runs]), describe([r.get("test_accuracy") for r in runs])
            cells.append({"arm": arm, "lr_of": lr_of, "lr": results.optimizers[lr_of].best_lr, "n": len(runs),
                          "val_loss_mean": val.mean, "val_loss_ci95": val.ci95, "n_diverged": val.missing,
                          "test_accuracy_mean": acc.mean, "test_accuracy_ci95": acc.ci95})
            if lr_of == arm:
                continue
            for epoch in sorted({early_epoch(epochs), epochs}):
                mine, theirs = [_at(r, epoch) for r in runs], [_at(r, epoch) for r in own[lr_of]]
                n = min(len(mine), len(theirs))
                equal_lr.append({"arm": arm, "other": lr_of, "lr_of": lr_of, "lr": results.optimizers[lr_of].best_lr,
                                 "metric": "val_loss", "epoch": epoch, **paired(mine[:n], theirs[:n]).to_dict()})
    return {"runs": ablation_runs, "cells": cells, "equal_lr": equal_lr}


def _values(trials: list, name: str) -> list:
    """The trials' values of one hyperparameter (those that have it)."""
    return [v for t in trials if (v := trial_point(t).get(name)) is not None]


def _numeric_range(values: list) -> list | None:
    return [min(values), max(values)] if values else None


def _distinct(values: list) -> list:
    """The distinct values in order of their written form (deterministic for any JSON scalars)."""
    return [v for _, v in sorted({value_text(v): v for v in values}.items())]


def sensitivity(results: Results, near: float = NEAR_BEST) -> dict[str, Any]:
    """Per arm, how forgiving its tuning landscape is, over every trial of every study.

    ``arms[arm]``: ``n_trials``, ``n_diverged``, ``studies``, ``best_value`` (the best trial's
    objective), ``best_trial`` (``{study, number}``), ``n_near_best`` (trials within ``near`` ×
    the best, relative) and per tuned hyperparameter ``{best, near_best, diverged}``: the best trial's
    value, the range (numeric) or the distinct values (categorical) of the near-best trials, and
    likewise of the diverged trials (``None`` when none diverged).
    """
    out = {}
    for arm, r in results.optimizers.items():
        space = arm_space(results, arm)
        done = [t for t in r.trials if t.value is not None]
        failed = [t for t in r.trials if t.value is None]
        best = best_trial(r, study=None)
        near_best = [t for t in done if best is not None and t.value <= best.value + near * abs(best.value)]
        params = {}
        for name in tuned_names(space):
            spread = _distinct if is_categorical(space[name]) else _numeric_range
            params[name] = {"best": None if best is None else trial_point(best).get(name),
                            "near_best": spread(_values(near_best, name)), "diverged": spread(_values(failed, name))}
        out[arm] = {"n_trials": len(r.trials), "n_diverged": len(failed),
                    "studies": len({t.study for t in r.trials}) or 1,
                    "best_value": None if best is None else best.value,
                    "best_trial": None if best is None else {"study": best.study, "number": best.number},
                    "n_near_best": len(near_best), "hyperparameters": params}
    return {"near_best": near, "arms": out}


def summarize(results: Results, ablation_runs: dict[str, dict[str, list[dict]]] | None = None,
              target: float | None = None) -> Results:
    """Fill the seed statistics in place (see the module docstring) and return ``results``.

    ``ablation_runs[arm][other]``: ``arm`` trained at ``other``'s tuned lr with the same seeds;
    ``None`` takes them from ``results.extra["ablation_runs"]`` (moved into ``ablation.runs``, so they
    are stored once) or keeps those already in ``results.extra["ablation"]`` (if any).
    ``target``: the validation-loss target; ``None`` = the median final validation loss of the
    baseline arm's seeds (AlgoPerf's rule).
    """
    arms = list(results.optimizers)
    epochs = int(results.config["epochs"])
    base = baseline_arm(arms)
    base_runs = seed_runs(results.optimizers[base].final)
    saved = results.extra.get("target") or {}
    if target is None and saved.get("rule") == "given":
        target = saved["value"]  # a target chosen by the caller survives a rebuild
    if target is None:
        value = median([r.get("val_loss") for r in base_runs])
        rule = (f"median final validation loss (epoch {epochs}) of {base} over its {len(base_runs)} "
                f"seed{'s' if len(base_runs) != 1 else ''} at its tuned setting")
    else:
        value, rule = float(target), "given"
    results.extra["target"] = {"value": value, "rule": rule, "arm": base if target is None else None}
    for arm in arms:
        runs = seed_runs(results.optimizers[arm].final)
        results.optimizers[arm].summary = _arm_summary(runs, epochs, value)
    results.extra["pairwise"] = _pairwise(results, epochs)
    if ablation_runs is None:  # compare's raw runs (extra["ablation_runs"]), else those kept by a summary
        ablation_runs = results.extra.pop("ablation_runs", None) or (results.extra.get("ablation") or {}).get("runs")
    else:
        results.extra.pop("ablation_runs", None)
    if ablation_runs:
        results.extra["ablation"] = _ablation(results, ablation_runs)
    else:
        results.extra.pop("ablation", None)
    results.extra.pop("lr_sensitivity", None)  # schema 1's lr-only form, superseded by "sensitivity"
    results.extra["sensitivity"] = sensitivity(results)
    return results
