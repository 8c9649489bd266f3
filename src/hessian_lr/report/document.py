"""The report as a list of blocks, laid out from ``Results`` and their ``WorkloadVerdicts``.
``markdown.py`` and ``html.py`` render the blocks; ``verdicts`` writes every comparative sentence;
this module only places them, with the tables of numbers, in sections.

Blocks: ``("h", level, text)``, ``("p", text)``, ``("ul", [text, ...])``,
``("table", header, rows)``, ``("img", alt, key)`` (``key`` names a figure: ``curves``,
``sensitivity``, ``ablation``, ``budget``; the suite's ``profiles``). Inline markup in texts is
limited to ``**bold**`` and ``code``.

The search spaces, tuned settings and arm sources come from results.json (``spaces.py``), never
from the arm registry: an arm may be an import path the registry does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hessian_lr.report.budget import budget_curves, studies_from_results
from hessian_lr.report.formatting import (MISSING, fmt, fmt_ci, fmt_mean_ci, fmt_median_range, fmt_p, fmt_pct,
                                         fmt_pct_ci, fmt_signed)
from hessian_lr.report.spaces import (arm_space, best_point, dimension_text, hyperparameter_names, lr_arms,
                                      packages_text, source_of, space_agreement, tunes_lr, value_text)
from hessian_lr.report.summary import summarize
from hessian_lr.report.verdicts import Comparison, WorkloadVerdicts, workload_verdicts
from hessian_lr.results import Results
from hessian_lr.stats import median

__all__ = ["Block", "build_document", "difference_cells", "lr_cell", "setting_cells", "fidelity_blocks",
           "search_space_blocks", "arms_source_blocks", "reproducibility_blocks"]

Block = tuple


def lr_cell(results: Results, arm: str) -> str:
    """The arm's tuned lr (``0.00443``), ``fixed 1.0`` when its space fixes the lr, ``—`` without one."""
    spec = arm_space(results, arm).get("lr")
    lr = results.optimizers[arm].best_lr
    if spec is not None and not tunes_lr({"lr": spec}):
        return dimension_text(spec)
    return MISSING if lr is None else f"{lr:.5f}"


def setting_cells(results: Results, arm: str, names: list[str]) -> list[str]:
    """The arm's tuned value of each of ``names`` (``fixed …`` for a fixed one, ``—`` outside its space)."""
    space, point = arm_space(results, arm), best_point(results, arm)
    return [MISSING if name not in space else dimension_text(space[name]) if space[name].get("type") == "fixed"
            else value_text(point.get(name)) for name in names]


def search_space_blocks(spaces: Mapping[str, Mapping[str, Any]]) -> list[Block]:
    """The spaces' agreement sentence and the arm × hyperparameter table of dimensions (arm → space)."""
    names = hyperparameter_names(spaces)
    rows = [[f"`{arm}`"] + [dimension_text(space[n]) if n in space else "default" for n in names]
            for arm, space in spaces.items()]
    return [("p", space_agreement(spaces).text + " A hyperparameter outside an arm's space keeps the arm's default "
                                                 "(its description below)."),
            ("table", ["arm"] + [f"`{n}`" for n in names], rows)]


def arms_source_blocks(sources: Mapping[str, Mapping[str, Any]]) -> list[Block]:
    """Where each arm came from (arm → results.json's ``source``): description, step, second-order
    backward, module or import path, packages and versions (``—`` where a schema-1 file has none)."""
    rows = []
    for arm, src in sources.items():
        second = src.get("second_order")
        rows.append([f"`{arm}`", src.get("description") or MISSING, src.get("step") or MISSING,
                     MISSING if second is None else "yes" if second else "no",
                     f"`{src['source']}`" if src.get("source") else MISSING, packages_text(src)])
    return [("table", ["arm", "optimizer", "training step", "second-order backward", "source", "packages"], rows)]


def _method(results: Results, k: int) -> list[Block]:
    c = results.config
    arms = list(results.optimizers)
    target = results.extra.get("target") or {}
    studies = int(c.get("studies") or 1)
    preset = c.get("space")
    overrides = sorted(c.get("spaces") or {})
    budget = (f"{c['trials']} trials per arm" + (f" in each of {studies} independent studies (sampler seeds "
                                                 f"{c['seed']}..{c['seed'] + studies - 1}; the headline result is "
                                                 "study 0's)" if studies > 1 else ""))
    items = [
        f"Workload `{c['workload']}`: training rows for training, a fixed validation split for tuning and "
        "targets, test rows read once per final run.",
        f"Equal tuning budget for every arm: Optuna TPE (sampler seed {c['seed']}), {budget}; objective: validation "
        f"loss after {c['epochs']} epochs."
        + (f" Search-space preset `{preset}`" + (f", with overrides for {', '.join(f'`{a}`' for a in overrides)}"
                                                  if overrides else "") + "." if preset else ""),
        f"The baseline is the first optimizer named, `{arms[0]}`: every paired difference is arm − {arms[0]}, and "
        "the target is set from its seeds.",
        (f"The best setting of each arm rerun with {k} seeds ({c['seed']}..{c['seed'] + k - 1}), paired across arms: "
         "seed k gives every arm the same initial weights and batch order." if k > 1 else
         f"The best setting of each arm trained once more with seed {c['seed']} (a single seed: no confidence "
         "intervals or tests are possible; run `hessian-lr compare --seeds K` for them)."),
        "Means with two-sided 95% t confidence intervals; arm differences paired by seed (paired t-test; "
        "Wilcoxon signed-rank when n ≥ 6; Holm's correction over the arms compared at each epoch). "
        "A difference is called significant when its 95% CI excludes 0.",
        f"Time to target: the first epoch whose validation loss is ≤ the target {fmt(target.get('value'))} "
        f"({target.get('rule', 'none')}), as AlgoPerf sets targets; runs that never reach it are counted, not "
        "dropped. Wall seconds are cumulative training time (evaluation excluded) at the end of that epoch.",
    ]
    if results.extra.get("ablation"):
        items.append(f"Equal-lr ablation: every arm whose space tunes the lr ({', '.join(lr_arms(results))}) also "
                     "trained with its own best hyperparameters but each other such arm's tuned lr, with the same "
                     "seeds, to separate the effect of the method from the effect of a different lr.")
    items.append(f"torch {results.versions.get('torch', MISSING)}, optuna {results.versions.get('optuna', MISSING)}, "
                 f"{c.get('threads', 1)} intra-op thread(s) per process.")
    return ([("h", 2, "Method"), ("ul", items), ("h", 3, "Search spaces")]
            + search_space_blocks({arm: arm_space(results, arm) for arm in arms})
            + [("h", 3, "Arms")] + arms_source_blocks({arm: source_of(results, arm) for arm in arms}))


def _tuned(results: Results, verdicts: WorkloadVerdicts) -> list[Block]:
    spaces = {arm: arm_space(results, arm) for arm in results.optimizers}
    others = [n for n in hyperparameter_names(spaces) if n != "lr"]
    studies = max(len({t.study for t in r.trials}) for r in results.optimizers.values()) or 1
    write_up = verdicts.write_up
    rows = []
    for arm, r in results.optimizers.items():
        original = write_up.tuned_lr.get(arm)
        failed = sum(t.value is None for t in r.trials)
        rows.append([arm, lr_cell(results, arm), MISSING if original is None else f"{original:.5f}",
                     *setting_cells(results, arm, others), fmt(r.best_value), f"{len(r.trials)} / {failed}"])
    trials = "trials (finished / diverged)" + (f", all {studies} studies" if studies > 1 else "")
    blocks: list[Block] = [
        ("h", 2, "Tuned learning rates and hyperparameters"),
        ("p", "The best setting of each arm's search space (study 0's best trial); `fixed` values are not tuned, "
              "`—` is outside the arm's space (its default). The original write-up's lrs are shown for "
              f"{' and '.join(write_up.tuned_lr)} only."),
        ("table", ["optimizer", "best lr", "original write-up", *[f"`{n}`" for n in others],
                   f"tuning objective (seed {results.config['seed']})", trials], rows)]
    if verdicts.lr_order:
        blocks.append(("p", verdicts.lr_order))
    return blocks


def _reproduction(verdicts: WorkloadVerdicts) -> list[Block]:
    reproduction = verdicts.reproduction
    if reproduction is None:
        return []
    return [("h", 2, "Reproduction of the original write-up"), ("p", reproduction.intro),
            ("ul", [claim.text for claim in reproduction.claims])]


def _arms_table(results: Results, k: int, figures: dict[str, str]) -> list[Block]:
    head = ["optimizer", "best lr", "seeds (diverged)", f"final val loss{' [95% CI]' if k > 1 else ''}",
            "test loss", "test accuracy", "s / epoch"]
    rows = []
    for arm, r in results.optimizers.items():
        s = r.summary
        rows.append([arm, lr_cell(results, arm), f"{s.get('n_seeds', 1)} ({s.get('n_diverged', 0)})",
                     fmt_mean_ci(s.get("val_loss_mean"), s.get("val_loss_ci95")),
                     fmt_mean_ci(s.get("test_loss_mean"), s.get("test_loss_ci95")),
                     f"{fmt_pct(s.get('test_accuracy_mean'))}"
                     + (f" {fmt_pct_ci(s.get('test_accuracy_ci95'))}" if s.get("test_accuracy_ci95") else ""),
                     fmt(s.get("epoch_s_mean"), 3)])
    blocks: list[Block] = [("h", 2, "Results"),
                           ("p", f"Means over {k} paired seeds with 95% t confidence intervals." if k > 1 else
                            "One seed per arm: values are single runs, with no confidence intervals."),
                           ("table", head, rows)]
    if "curves" in figures:
        blocks.append(("img", "validation-loss curves (mean and 95% CI band)", "curves"))
    return blocks


def difference_cells(c: Comparison, scale: float = 1.0, digits: int = 4) -> list[str]:
    """n, mean difference, 95% CI, paired t p and Wilcoxon p of a comparison, as table cells."""
    diff = None if c.mean_diff is None else c.mean_diff * scale
    ci = None if c.ci95 is None else [bound * scale for bound in c.ci95]
    return [str(c.n), fmt_signed(diff, digits), fmt_ci(ci, digits, signed=True), fmt_p(c.p_t), fmt_p(c.p_wilcoxon)]


def _pairwise_table(results: Results, verdicts: WorkloadVerdicts) -> list[Block]:
    if not verdicts.comparisons:
        return []
    epochs = int(results.config["epochs"])
    table = []
    for c in verdicts.comparisons:
        accuracy = c.metric == "test_accuracy"
        what = {"val_loss": f"val loss @ {c.epoch}", "test_loss": f"test loss @ {epochs}",
                "test_accuracy": f"test acc (pp) @ {epochs}"}[c.metric]
        table.append([c.arm, what, *difference_cells(c, *((100.0, 2) if accuracy else (1.0, 4))), fmt_p(c.p_holm),
                      c.label])
    base = verdicts.baseline
    return [("h", 2, f"Paired differences against {base}"),
            ("p", f"Each row is arm − {base}, paired by seed (negative = lower loss; accuracy in "
                  "percentage points, positive = higher accuracy)."),
            ("table", ["arm", "quantity", "n", "mean diff", "95% CI", "paired t p", "Wilcoxon p", "Holm p",
                       "verdict"], table)]


def _time_to_target(results: Results) -> list[Block]:
    target = results.extra.get("target") or {}
    if target.get("value") is None:
        return [("h", 2, "Time to target"), ("p", "No target: every run of the baseline arm diverged.")]
    rows = []
    for arm, r in results.optimizers.items():
        hits = r.summary.get("time_to_target_epochs") or []
        reached_epoch = median(hits)
        rows.append([arm, f"{sum(h is not None for h in hits)} / {len(hits)}",
                     "—" if reached_epoch is None else f"{reached_epoch:g}",
                     fmt(median(r.summary.get("time_to_target_wall_s") or []), 2),
                     ", ".join("never" if h is None else str(h) for h in hits)])
    return [("h", 2, "Time to target"),
            ("p", f"Target: validation loss ≤ {fmt(target['value'])} ({target['rule']})."),
            ("table", ["optimizer", "seeds reaching it", "median epoch (of those)", "median wall s (of those)",
                       "epoch per seed"], rows)]


def _ablation(results: Results, verdicts: WorkloadVerdicts, figures: dict[str, str]) -> list[Block]:
    ab = results.extra.get("ablation")
    if not ab:
        return [("h", 2, "Equal-lr ablation"),
                ("p", "Not run: every arm was trained only at its own tuned lr, so this report cannot separate the "
                      "effect of the method from the effect of a different lr.")]
    arms = lr_arms(results)
    absent = [a for a in results.optimizers if a not in arms]
    cells = {(c["arm"], c["lr_of"]): c for c in ab["cells"]}

    def cell(arm: str, lr_of: str) -> str:
        if (arm, lr_of) not in cells:
            return MISSING
        c = cells[(arm, lr_of)]
        return (fmt_mean_ci(c["val_loss_mean"], c["val_loss_ci95"]) + (" **own**" if arm == lr_of else "")
                + (f" ({c['n_diverged']} diverged)" if c["n_diverged"] else ""))

    head = ["arm \\ at the lr of"] + [f"{b} ({lr_cell(results, b)})" for b in arms]
    rows = [[a] + [cell(a, b) for b in arms] for a in arms]
    equal_lr = [[c.arm, f"{c.baseline} ({lr_cell(results, c.baseline)})", f"val loss @ {c.epoch}",
                 *difference_cells(c), c.label] for c in verdicts.equal_lr]
    taking_part = (f"Arms taking part (their space tunes the lr): {', '.join(arms)}. Each keeps its own best "
                   "hyperparameters; only the lr is swapped for the other arm's tuned lr.")
    if absent:
        taking_part += (" Not taking part (the lr is not in their search space, or fixed): "
                        + ", ".join(f"{a} ({dimension_text(arm_space(results, a)['lr'])})"
                                    if "lr" in arm_space(results, a) else a for a in absent) + ".")
    blocks: list[Block] = [
        ("h", 2, "Equal-lr ablation"),
        ("p", taking_part),
        ("p", "Final validation loss (mean [95% CI]) of each arm (rows) trained at each arm's tuned lr (columns)."),
        ("table", head, rows),
        ("p", "At the same lr: arm (trained at the other arm's tuned lr) − the other arm (at its own tuned lr), "
              "paired by seed; negative = the arm is better at that lr."),
        ("table", ["arm", "at the lr of", "quantity", "n", "mean diff", "95% CI", "paired t p", "Wilcoxon p", "verdict"],
         equal_lr),
    ]
    if "ablation" in figures:
        blocks.append(("img", "final validation loss of every arm at every tuned lr", "ablation"))
    return blocks


def _range_text(spread: Any) -> str:
    """A near-best or diverged spread: ``[lo, hi]`` as ``lo – hi`` (one value alone), a categorical list
    as ``a, b``, ``—`` for none."""
    if not spread:
        return MISSING
    if isinstance(spread, list) and len(spread) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                              for v in spread):
        low, high = spread
        return value_text(low) if low == high else f"{value_text(low)} – {value_text(high)}"
    return ", ".join(value_text(v) for v in spread)


def _sensitivity(results: Results, figures: dict[str, str]) -> list[Block]:
    sens = results.extra.get("sensitivity") or {}
    near = sens.get("near_best", 0.05)
    rows = []
    for arm, s in (sens.get("arms") or {}).items():
        for name, h in s["hyperparameters"].items():
            rows.append([arm, f"`{name}`", value_text(h["best"]), _range_text(h["near_best"]),
                         f"{s['n_near_best']} / {s['n_trials']}", _range_text(h["diverged"])])
    studies = max((s.get("studies", 1) for s in (sens.get("arms") or {}).values()), default=1)
    blocks: list[Block] = [("h", 2, "Hyperparameter sensitivity")]
    if rows:
        over = f"every trial of all {studies} studies" if studies > 1 else "every trial"
        blocks += [("p", f"Over {over}: the best trial's value of each tuned hyperparameter and the values of the "
                         f"trials whose objective is within {100 * near:.0f}% of that best; a wide range means the arm "
                         "is forgiving about that hyperparameter (the others vary at the same time)."),
                   ("table", ["optimizer", "hyperparameter", "best trial", f"within {100 * near:.0f}% of best",
                              "trials within", "diverged at"], rows)]
    if "sensitivity" in figures:
        blocks.append(("img", "tuning objective against each tuned hyperparameter, every trial (x: diverged; dotted: "
                              "each arm's tuned value)", "sensitivity"))
    return blocks


def _studies(results: Results, verdicts: WorkloadVerdicts, figures: dict[str, str]) -> list[Block]:
    """Repeated tuning studies: each arm's per-study tuned result, its spread, and the budget curves."""
    if not verdicts.tuning_luck:
        return []
    rows = []
    for luck in verdicts.tuning_luck:
        s = luck.spread
        finals = s.final_mean_per_study or ()
        rows.append([luck.arm, ", ".join(fmt(v) for v in s.best_per_study), fmt(s.best_median),
                     f"{fmt(s.best_low)} – {fmt(s.best_high)}", ", ".join(fmt(v) for v in finals) or MISSING,
                     fmt(s.final_median), f"{fmt(s.final_low)} – {fmt(s.final_high)}" if finals else MISSING])
    k = len(verdicts.tuning_luck[0].spread.best_per_study)
    blocks: list[Block] = [
        ("h", 2, "Tuning luck: repeated studies"),
        ("p", f"Each arm was tuned in {k} independent studies (same budget, different sampler seeds), and each study's "
              "best setting rerun with the final seeds: the spread is the luck of one tuning study (Sivaprasad et al. "
              "2020; AlgoPerf repeats its studies for the same reason)."),
        ("table", ["optimizer", "best objective per study", "median", "range", "final val loss per study (mean)",
                   "median", "range"], rows),
        ("ul", [luck.text for luck in verdicts.tuning_luck])]
    curves = budget_curves(studies_from_results(results))
    length = min(len(c.budgets) for c in curves.values())
    budgets = sorted({1, -(-length // 4), -(-length // 2), length})
    blocks += [("p", "Budget curves: the best validation loss after n trials of a study, median [min, max] over the "
                     "studies (— while some study has no successful trial yet):"),
               ("table", ["optimizer", *(f"n = {n}" for n in budgets)],
                [[arm, *(fmt_median_range(c.median[n - 1], c.low[n - 1], c.high[n - 1]) for n in budgets)]
                 for arm, c in curves.items()])]
    if "budget" in figures:
        blocks.append(("img", "best validation loss after n trials: median and range over the studies", "budget"))
    return blocks


def _questions(verdicts: WorkloadVerdicts) -> list[Block]:
    return [("h", 2, "The write-up's questions"),
            ("p", "Would better curvature estimators, or other base optimizers, change the answer?")] + [
        ("p", text) for text in verdicts.questions.texts]


def _fidelity(results: Results) -> list[Block]:
    return fidelity_blocks(results.extra.get("fidelity"))


def fidelity_blocks(fidelity: Any) -> list[Block]:
    """The estimator-fidelity section of a ``fidelity.json`` (or an older row list), ``[]`` without one."""
    if not fidelity:
        return []
    blocks: list[Block] = [("h", 2, "Estimator fidelity")]
    if isinstance(fidelity, dict) and fidelity.get("description"):
        blocks.append(("p", str(fidelity["description"])))
    if isinstance(fidelity, dict) and "checkpoints" in fidelity and "estimators" in fidelity:
        return blocks + _fidelity_study(fidelity)
    rows = fidelity.get("rows") if isinstance(fidelity, dict) else fidelity
    if isinstance(rows, dict):
        rows = [{"name": k, **v} if isinstance(v, dict) else {"name": k, "value": v} for k, v in rows.items()]
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        head = list(dict.fromkeys(k for r in rows for k in r))
        cell = lambda v: fmt(v) if isinstance(v, float) else "—" if v is None else str(v)  # noqa: E731
        blocks.append(("table", head, [[cell(r.get(k)) for k in head] for r in rows]))
    return blocks


def _fidelity_study(f: dict[str, Any]) -> list[Block]:
    """analysis.fidelity's result: one table per metric, estimators (and references) by checkpoint."""
    c = f.get("config") or {}
    steps = f["checkpoints"]
    series = {**f["estimators"], **{f"{k} (reference)": v for k, v in (f.get("references") or {}).items()}}
    blocks: list[Block] = [("p", f"Diagonal-curvature estimates against the exact Hessian diagonal on "
                                 f"`{c.get('workload', '?')}` ({c.get('parameters', '?')} parameters, "
                                 f"{c.get('base_optimizer', '?')} at lr {c.get('lr', '?')}, seed {c.get('seed', '?')}), "
                                 "at training steps " + ", ".join(map(str, steps)) + ".")]
    for metric in ("spearman", "log_pearson", "median_rel_error"):
        rows = [[name] + ["—" if v is None else f"{v:.3g}" if "error" in metric else f"{v:.3f}"
                          for v in s.get(metric, [])] for name, s in series.items() if metric in s]
        if rows:
            blocks += [("p", f"**{metric}**"), ("table", ["estimator"] + [f"step {s}" for s in steps], rows)]
    return blocks


def _conclusion(verdicts: WorkloadVerdicts) -> list[Block]:
    conclusion = verdicts.conclusion
    return ([("h", 2, "Conclusion")] + [("p", arm.text) for arm in conclusion.arms]
            + [("p", text) for text in conclusion.closing])


def build_document(results: Results, figures: dict[str, str] | None = None) -> list[Block]:
    """The report's blocks.

    Args:
        results: one workload's results; summarized here first when they are not yet.
        figures: figure key → file name; only those figures get an image block.

    Returns:
        The blocks, in the report's order.
    """
    if "pairwise" not in results.extra:
        summarize(results)
    figures = figures or {}
    verdicts = workload_verdicts(results)
    c = results.config
    k = verdicts.seeds
    blocks: list[Block] = [
        ("h", 1, f"HessianLRAdaptation vs tuned baselines on {c['workload']}"),
        ("p", f"{len(results.optimizers)} arms ({', '.join(results.optimizers)}), {c['trials']} tuning trials each, "
              f"{c['epochs']} epochs, {k} seed{'s' if k != 1 else ''} per final setting."
              + ("" if k > 1 else " **Single seed: no confidence intervals.**")),
        ("h", 2, "Hypothesis"),
        ("p", "Rescaling each gradient by 1/sqrt(running average of (g_t - g_(t-1))^2), a crude estimate of the "
              "Hessian diagonal, before the base optimizer steps makes training converge faster than the base "
              "optimizer alone, each with its own tuned learning rate."),
    ]
    blocks += _method(results, k)
    blocks += _tuned(results, verdicts)
    blocks += _reproduction(verdicts)
    blocks += _arms_table(results, k, figures)
    blocks += _pairwise_table(results, verdicts)
    blocks += _time_to_target(results)
    blocks += _ablation(results, verdicts, figures)
    blocks += _sensitivity(results, figures)
    blocks += _studies(results, verdicts, figures)
    blocks += _fidelity(results)
    blocks += _questions(verdicts)
    blocks += _conclusion(verdicts)
    blocks += reproducibility_blocks("`results.json`; `hessian-lr report DIR` rebuilds this report (markdown, HTML and "
                                     "figures) from it without training", results.versions)
    return blocks


def reproducibility_blocks(where: str, versions: Mapping[str, Any]) -> list[Block]:
    """The closing section: where every number comes from, and the versions."""
    return [("h", 2, "Reproducibility"),
            ("p", f"Every number above comes from {where}. Versions: "
                  + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")]
