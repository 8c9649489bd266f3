"""The report as a list of blocks, laid out from ``Results`` and their ``WorkloadVerdicts``.
``markdown.py`` and ``html.py`` render the blocks; ``verdicts.py`` writes every comparative sentence;
this module only places them, with the tables of numbers, in sections.

Blocks: ``("h", level, text)``, ``("p", text)``, ``("ul", [text, ...])``,
``("table", header, rows)``, ``("img", alt, key)`` (``key`` names a figure: ``curves``,
``sensitivity``, ``ablation``). Inline markup in texts is limited to ``**bold**`` and ``code``.
"""

from __future__ import annotations

from typing import Any

from hessian_lr.arms import ARMS
from hessian_lr.report.formatting import fmt, fmt_ci, fmt_mean_ci, fmt_p, fmt_pct, fmt_pct_ci, fmt_signed
from hessian_lr.report.summary import summarize
from hessian_lr.report.verdicts import ORIGINAL_BEST_LR, Comparison, WorkloadVerdicts, workload_verdicts
from hessian_lr.results import Results
from hessian_lr.stats import median

__all__ = ["Block", "build_document"]

Block = tuple


def _method(results: Results, k: int) -> list[Block]:
    c = results.config
    arms = list(results.optimizers)
    target = results.extra.get("target") or {}
    items = [
        f"Workload `{c['workload']}`: training rows for training, a fixed validation split for tuning and "
        "targets, test rows read once per final run.",
        f"Equal tuning budget and search space for every arm: Optuna TPE (sampler seed {c['seed']}), "
        f"{c['trials']} trials, lr log-uniform in [{c['lr_low']:g}, {c['lr_high']:g}], objective: validation "
        f"loss after {c['epochs']} epochs. Only the lr is tuned; every other hyperparameter keeps its default.",
        (f"The best lr of each arm rerun with {k} seeds ({c['seed']}..{c['seed'] + k - 1}), paired across arms: "
         "seed k gives every arm the same initial weights and batch order." if k > 1 else
         f"The best lr of each arm trained once more with seed {c['seed']} (a single seed: no confidence "
         "intervals or tests are possible; run `hessian-lr compare --seeds K` for them)."),
        "Means with two-sided 95% t confidence intervals; arm differences paired by seed (paired t-test; "
        "Wilcoxon signed-rank when n ≥ 6; Holm's correction over the arms compared at each epoch). "
        "A difference is called significant when its 95% CI excludes 0.",
        f"Time to target: the first epoch whose validation loss is ≤ the target {fmt(target.get('value'))} "
        f"({target.get('rule', 'none')}), as AlgoPerf sets targets; runs that never reach it are counted, not "
        "dropped. Wall seconds are cumulative training time (evaluation excluded) at the end of that epoch.",
    ]
    if results.extra.get("ablation"):
        items.append("Equal-lr ablation: every arm also trained at every other arm's tuned lr with the same "
                     "seeds, to separate the effect of the method from the effect of a different lr.")
    items.append(f"torch {results.versions.get('torch')}, optuna {results.versions.get('optuna')}, "
                 f"{c.get('threads', 1)} intra-op thread(s) per process.")
    rows = [[f"`{a}`", ARMS[a].description if a in ARMS else "—",
             "yes" if a in ARMS and ARMS[a].second_order else "no"] for a in arms]
    return [("h", 2, "Method"), ("ul", items), ("p", "Arms (every hyperparameter but the lr at its default):"),
            ("table", ["arm", "optimizer", "second-order backward"], rows)]


def _tuned(results: Results, verdicts: WorkloadVerdicts) -> list[Block]:
    rows = []
    for arm, r in results.optimizers.items():
        original = ORIGINAL_BEST_LR.get(arm)
        failed = sum(t.value is None for t in r.trials)
        rows.append([arm, f"{r.best_lr:.5f}", "—" if original is None else f"{original:.5f}", fmt(r.best_value),
                     f"{len(r.trials)} / {failed}"])
    blocks: list[Block] = [("h", 2, "Tuned learning rates"),
                           ("table", ["optimizer", "best lr", "original write-up", "tuning objective (seed "
                                      f"{results.config['seed']})", "trials (finished / diverged)"], rows)]
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
        rows.append([arm, f"{r.best_lr:.5f}", f"{s.get('n_seeds', 1)} ({s.get('n_diverged', 0)})",
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


def _difference_cells(c: Comparison, scale: float = 1.0, digits: int = 4) -> list[str]:
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
        table.append([c.arm, what, *_difference_cells(c, *((100.0, 2) if accuracy else (1.0, 4))), fmt_p(c.p_holm),
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
    arms = list(results.optimizers)
    cells = {(c["arm"], c["lr_of"]): c for c in ab["cells"]}

    def cell(arm: str, lr_of: str) -> str:
        if (arm, lr_of) not in cells:
            return "—"
        c = cells[(arm, lr_of)]
        return (fmt_mean_ci(c["val_loss_mean"], c["val_loss_ci95"]) + (" **own**" if arm == lr_of else "")
                + (f" ({c['n_diverged']} diverged)" if c["n_diverged"] else ""))

    head = ["arm \\ at the lr of"] + [f"{b} ({results.optimizers[b].best_lr:.5f})" for b in arms]
    rows = [[a] + [cell(a, b) for b in arms] for a in arms]
    equal_lr = [[c.arm, f"{c.baseline} ({results.optimizers[c.baseline].best_lr:.5f})", f"val loss @ {c.epoch}",
                 *_difference_cells(c), c.label] for c in verdicts.equal_lr]
    blocks: list[Block] = [
        ("h", 2, "Equal-lr ablation"),
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


def _sensitivity(results: Results, figures: dict[str, str]) -> list[Block]:
    sens = (results.extra.get("lr_sensitivity") or {}).get("arms") or {}
    near = (results.extra.get("lr_sensitivity") or {}).get("near_best", 0.05)
    rows = []
    for arm, s in sens.items():
        rng = s["near_best_lr_range"]
        rows.append([arm, f"{s['best_lr']:.5f}", fmt(s["best_value"]),
                     "—" if rng is None else f"{rng[0]:.5f} – {rng[1]:.5f}", f"{s['n_near_best']} / {s['n_trials']}",
                     "—" if s["lowest_diverged_lr"] is None else f"{s['lowest_diverged_lr']:.5f}"])
    blocks: list[Block] = [("h", 2, "Learning-rate sensitivity")]
    if rows:
        blocks += [("p", f"Trials whose objective is within {100 * near:.0f}% of the arm's best: a wide range means "
                         "the arm is forgiving about its lr."),
                   ("table", ["optimizer", "best lr", "best objective", f"lrs within {100 * near:.0f}% of best",
                              "trials within", "lowest diverged lr"], rows)]
    if "sensitivity" in figures:
        blocks.append(("img", "tuning objective against lr for every trial", "sensitivity"))
    return blocks


def _fidelity(results: Results) -> list[Block]:
    fidelity = results.extra.get("fidelity")
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
    blocks += _fidelity(results)
    blocks += _conclusion(verdicts)
    blocks += [("h", 2, "Reproducibility"),
               ("p", "Every number above comes from `results.json`; `hessian-lr report DIR` rebuilds this report "
                     "(markdown, HTML and figures) from it without training. Versions: "
                     + ", ".join(f"{k} {v}" for k, v in results.versions.items()) + ".")]
    return blocks
