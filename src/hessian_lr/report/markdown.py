"""The report, generated from ``Results`` alone: a list of blocks rendered as markdown here and as
HTML in ``html.py``. Every number and every comparative sentence is computed from the results.

Blocks: ``("h", level, text)``, ``("p", text)``, ``("ul", [text, ...])``,
``("table", header, rows)``, ``("img", alt, key)`` (``key`` names a figure: ``curves``,
``sensitivity``, ``ablation``). Inline markup in texts is limited to ``**bold**`` and ``code``.
"""

from __future__ import annotations

from typing import Any

from hessian_lr.arms import ARMS
from hessian_lr.report.summary import baseline_arm, early_epoch, seed_runs, summarize
from hessian_lr.results import Results

__all__ = ["render_markdown", "build_document", "to_markdown", "early_epoch", "ORIGINAL_BEST_LR", "Block"]

Block = tuple
# The original write-up's tuned learning rates, shown beside ours (never used to set anything).
ORIGINAL_BEST_LR = {"adam": 0.00524, "hessian-adam": 0.00271}
ORIGINAL_CLAIM = "HessianLR(Adam) is faster early, Adam ends slightly lower"
ALPHA = 0.05


# -- formatting -------------------------------------------------------------------------------------

def _f(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def _ci(ci: list[float] | None, digits: int = 4, signed: bool = False) -> str:
    if ci is None:
        return "—"
    fmt = _signed if signed else _f
    return f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _peq(p: float | None) -> str:
    """``p=0.0123`` or ``p<0.0001`` inside a sentence."""
    text = _p(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _pct_ci(ci: list[float] | None) -> str:
    return "—" if ci is None else f"[{100 * ci[0]:.1f}%, {100 * ci[1]:.1f}%]"


def _mean_ci(mean: float | None, ci: list[float] | None, digits: int = 4) -> str:
    return _f(mean, digits) if ci is None else f"{_f(mean, digits)} {_ci(ci, digits)}"


# -- verdicts ---------------------------------------------------------------------------------------

def direction(row: dict[str, Any]) -> int | None:
    """-1: the CI of ``arm - baseline`` lies below 0; +1: above; 0: it contains 0; None: no CI."""
    ci = row.get("ci95")
    if ci is None:
        return None
    return -1 if ci[1] < 0 else 1 if ci[0] > 0 else 0


def _verdict(row: dict[str, Any], higher_is_better: bool = False) -> str:
    d = direction(row)
    if d is None:
        return "single seed: no test"
    if d == 0:
        return "no significant difference"
    better = (d > 0) == higher_is_better
    if not _survives_holm(row):
        return f"{row['arm']} {'better' if better else 'worse'} by CI, not after Holm"
    return f"{row['arm']} {'better' if better else 'worse'} (CI excludes 0)"


def _survives_holm(row: dict[str, Any]) -> bool:
    """Rows without a Holm p (single comparisons, the ablation) stand on their CI alone."""
    return row.get("p_holm") is None or row["p_holm"] < ALPHA


def _rows(results: Results, metric: str, epoch: int | None = None) -> list[dict[str, Any]]:
    return [r for r in (results.extra.get("pairwise") or {}).get("comparisons", [])
            if r["metric"] == metric and (epoch is None or r["epoch"] == epoch)]


def _row(results: Results, arm: str, metric: str, epoch: int) -> dict[str, Any] | None:
    return next((r for r in _rows(results, metric, epoch) if r["arm"] == arm), None)


def _diff_sentence(row: dict[str, Any], what: str, digits: int = 4, scale: float = 1.0, unit: str = "") -> str:
    base, arm = row["baseline"], row["arm"]
    diff = None if row["mean_diff"] is None else row["mean_diff"] * scale
    text = f"{what}: {arm} − {base} = {_signed(diff, digits)}{unit}"
    if row["ci95"] is None:
        return text + f" (n={row['n']}; one seed, so no confidence interval and no statistical claim)"
    ci = [c * scale for c in row["ci95"]]
    return text + (f" (95% CI {_ci(ci, digits, signed=True)}{unit}, paired t {_peq(row['p_t'])}"
                   + (f", Wilcoxon {_peq(row['p_wilcoxon'])}" if row.get("p_wilcoxon") is not None else "")
                   + f", n={row['n']})")


# -- sections ---------------------------------------------------------------------------------------

def _seeds(results: Results) -> int:
    return max(len(seed_runs(r.final)) for r in results.optimizers.values())


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
        f"Time to target: the first epoch whose validation loss is ≤ the target {_f(target.get('value'))} "
        f"({target.get('rule', 'none')}), as AlgoPerf sets targets; runs that never reach it are counted, not "
        "dropped. Wall seconds are cumulative training time (evaluation excluded) at the end of that epoch.",
    ]
    if results.extra.get("ablation"):
        items.append("Equal-lr ablation: every arm also trained at every other arm's tuned lr with the same "
                     "seeds, to separate the effect of the method from the effect of a different lr.")
    items.append(f"torch {results.versions.get('torch')}, optuna {results.versions.get('optuna')}, "
                 f"{c.get('threads', 1)} intra-op thread(s) per process.")
    blocks: list[Block] = [("h", 2, "Method"), ("ul", items), ("p", "Arms (every hyperparameter but the lr at "
                                                                 "its default):")]
    rows = [[f"`{a}`", ARMS[a].description if a in ARMS else "—",
             "yes" if a in ARMS and ARMS[a].second_order else "no"] for a in arms]
    blocks.append(("table", ["arm", "optimizer", "second-order backward"], rows))
    return blocks


def _tuned(results: Results) -> list[Block]:
    rows = []
    for arm, r in results.optimizers.items():
        original = ORIGINAL_BEST_LR.get(arm)
        failed = sum(t.value is None for t in r.trials)
        rows.append([arm, f"{r.best_lr:.5f}", "—" if original is None else f"{original:.5f}", _f(r.best_value),
                     f"{len(r.trials)} / {failed}"])
    blocks: list[Block] = [("h", 2, "Tuned learning rates"),
                           ("table", ["optimizer", "best lr", "original write-up", "tuning objective (seed "
                                      f"{results.config['seed']})", "trials (finished / diverged)"], rows)]
    if len(results.optimizers) > 1:
        ordered = sorted(results.optimizers, key=lambda a: results.optimizers[a].best_lr)
        text = f"{ordered[0]} ({results.optimizers[ordered[0]].best_lr:.5f})"
        for previous, arm in zip(ordered, ordered[1:]):
            same = results.optimizers[arm].best_lr == results.optimizers[previous].best_lr
            text += f" {'=' if same else '<'} {arm} ({results.optimizers[arm].best_lr:.5f})"
        blocks.append(("p", f"Ordered by tuned learning rate (lowest first): {text}."))
    return blocks


def _claim_part(row: dict[str, Any] | None, want: int) -> str:
    """'supported' when the CI lies on the claimed side, 'contradicted' on the other, else not supported."""
    if row is None or row["mean_diff"] is None:
        return "untestable"
    d = direction(row)
    if d is None:
        return "matches in sign (single seed: not a statistical claim)" if (row["mean_diff"] * want > 0) else \
            "does not match in sign (single seed)"
    return "supported" if d == want else "contradicted" if d == -want else "not supported (within seed noise)"


def _reproduction(results: Results) -> list[Block]:
    if not {"adam", "hessian-adam"} <= set(results.optimizers):
        return []
    epochs = int(results.config["epochs"])
    early = early_epoch(epochs)
    lr_a, lr_h = results.optimizers["adam"].best_lr, results.optimizers["hessian-adam"].best_lr
    early_row = _row(results, "hessian-adam", "val_loss", early)
    end_row = _row(results, "hessian-adam", "val_loss", epochs)
    if early_row is None or end_row is None or results.extra.get("pairwise", {}).get("baseline") != "adam":
        return []
    early_verdict, end_verdict = _claim_part(early_row, -1), _claim_part(end_row, +1)
    return [
        ("h", 2, "Reproduction of the original write-up"),
        ("p", f"The original write-up tuned adam to lr {ORIGINAL_BEST_LR['adam']:.5f} and hessian-adam to "
              f"{ORIGINAL_BEST_LR['hessian-adam']:.5f}; here they tuned to {lr_a:.5f} and {lr_h:.5f} "
              f"(hessian-adam's lr is {'lower than' if lr_h < lr_a else 'higher than' if lr_h > lr_a else 'equal to'} "
              f"adam's here; in the write-up it was lower). Its claim: {ORIGINAL_CLAIM}."),
        ("ul", [f"Faster early — {_diff_sentence(early_row, f'validation loss at epoch {early}')}: "
                f"**{early_verdict}**.",
                f"Adam slightly lower at the end — {_diff_sentence(end_row, f'validation loss at epoch {epochs}')}: "
                f"**{end_verdict}**."]),
    ]


def _arms_table(results: Results, k: int, figures: dict[str, str]) -> list[Block]:
    head = ["optimizer", "best lr", "seeds (diverged)", f"final val loss{' [95% CI]' if k > 1 else ''}",
            "test loss", "test accuracy", "s / epoch"]
    rows = []
    for arm, r in results.optimizers.items():
        s = r.summary
        rows.append([arm, f"{r.best_lr:.5f}", f"{s.get('n_seeds', 1)} ({s.get('n_diverged', 0)})",
                     _mean_ci(s.get("val_loss_mean"), s.get("val_loss_ci95")),
                     _mean_ci(s.get("test_loss_mean"), s.get("test_loss_ci95")),
                     f"{_pct(s.get('test_accuracy_mean'))}"
                     + (f" {_pct_ci(s.get('test_accuracy_ci95'))}" if s.get("test_accuracy_ci95") else ""),
                     _f(s.get("epoch_s_mean"), 3)])
    blocks: list[Block] = [("h", 2, "Results"),
                           ("p", f"Means over {k} paired seeds with 95% t confidence intervals." if k > 1 else
                            "One seed per arm: values are single runs, with no confidence intervals."),
                           ("table", head, rows)]
    if "curves" in figures:
        blocks.append(("img", "validation-loss curves (mean and 95% CI band)", "curves"))
    return blocks


def _pairwise_table(results: Results) -> list[Block]:
    pw = results.extra.get("pairwise") or {}
    rows = pw.get("comparisons") or []
    if not rows:
        return []
    epochs = int(results.config["epochs"])
    table = []
    for r in rows:
        acc = r["metric"] == "test_accuracy"
        scale, digits = (100.0, 2) if acc else (1.0, 4)
        diff = None if r["mean_diff"] is None else r["mean_diff"] * scale
        ci = None if r["ci95"] is None else [c * scale for c in r["ci95"]]
        what = {"val_loss": f"val loss @ {r['epoch']}", "test_loss": f"test loss @ {epochs}",
                "test_accuracy": f"test acc (pp) @ {epochs}"}[r["metric"]]
        table.append([r["arm"], what, str(r["n"]), _signed(diff, digits), _ci(ci, digits, signed=True), _p(r["p_t"]),
                      _p(r["p_wilcoxon"]), _p(r["p_holm"]), _verdict(r, higher_is_better=acc)])
    return [("h", 2, f"Paired differences against {pw['baseline']}"),
            ("p", f"Each row is arm − {pw['baseline']}, paired by seed (negative = lower loss; accuracy in "
                  "percentage points, positive = higher accuracy)."),
            ("table", ["arm", "quantity", "n", "mean diff", "95% CI", "paired t p", "Wilcoxon p", "Holm p",
                       "verdict"], table)]


def _time_to_target(results: Results) -> list[Block]:
    target = results.extra.get("target") or {}
    if target.get("value") is None:
        return [("h", 2, "Time to target"), ("p", "No target: every run of the baseline arm diverged.")]
    rows = []
    for arm, r in results.optimizers.items():
        s = r.summary
        hits = s.get("time_to_target_epochs") or []
        walls = [w for w in s.get("time_to_target_wall_s") or [] if w is not None]
        reached = sorted(h for h in hits if h is not None)
        med = None if not reached else reached[len(reached) // 2] if len(reached) % 2 else \
            (reached[len(reached) // 2 - 1] + reached[len(reached) // 2]) / 2
        med_wall = None if not walls else sorted(walls)[len(walls) // 2] if len(walls) % 2 else \
            (sorted(walls)[len(walls) // 2 - 1] + sorted(walls)[len(walls) // 2]) / 2
        rows.append([arm, f"{len(reached)} / {len(hits)}", "—" if med is None else f"{med:g}", _f(med_wall, 2),
                     ", ".join("never" if h is None else str(h) for h in hits)])
    return [("h", 2, "Time to target"),
            ("p", f"Target: validation loss ≤ {_f(target['value'])} ({target['rule']})."),
            ("table", ["optimizer", "seeds reaching it", "median epoch (of those)", "median wall s (of those)",
                       "epoch per seed"], rows)]


def _ablation(results: Results, figures: dict[str, str]) -> list[Block]:
    ab = results.extra.get("ablation")
    if not ab:
        return [("h", 2, "Equal-lr ablation"),
                ("p", "Not run: every arm was trained only at its own tuned lr, so this report cannot separate the "
                      "effect of the method from the effect of a different lr.")]
    arms = list(results.optimizers)
    cells = {(c["arm"], c["lr_of"]): c for c in ab["cells"]}
    head = ["arm \\ at the lr of"] + [f"{b} ({results.optimizers[b].best_lr:.5f})" for b in arms]
    rows = [[a] + [("—" if (a, b) not in cells else
                    _mean_ci(cells[(a, b)]["val_loss_mean"], cells[(a, b)]["val_loss_ci95"])
                    + (" **own**" if a == b else "")
                    + (f" ({cells[(a, b)]['n_diverged']} diverged)" if cells[(a, b)]["n_diverged"] else ""))
                   for b in arms] for a in arms]
    eq = [[r["arm"], f"{r['other']} ({r['lr']:.5f})", f"val loss @ {r['epoch']}", str(r["n"]), _signed(r["mean_diff"]),
           _ci(r["ci95"], signed=True), _p(r["p_t"]), _p(r["p_wilcoxon"]),
           _verdict({**r, "arm": r["arm"]})] for r in ab["equal_lr"]]
    blocks: list[Block] = [
        ("h", 2, "Equal-lr ablation"),
        ("p", "Final validation loss (mean [95% CI]) of each arm (rows) trained at each arm's tuned lr (columns)."),
        ("table", head, rows),
        ("p", "At the same lr: arm (trained at the other arm's tuned lr) − the other arm (at its own tuned lr), "
              "paired by seed; negative = the arm is better at that lr."),
        ("table", ["arm", "at the lr of", "quantity", "n", "mean diff", "95% CI", "paired t p", "Wilcoxon p", "verdict"],
         eq),
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
        rows.append([arm, f"{s['best_lr']:.5f}", _f(s["best_value"]),
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
        cell = lambda v: _f(v) if isinstance(v, float) else "—" if v is None else str(v)  # noqa: E731
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


def _equal_lr(ab: dict[str, Any], arm: str, base: str, epoch: int, when: str) -> tuple[str, str | None, str | None]:
    """Sentence on ``arm - base`` at both tuned lrs, the supported claim (if any) and what is not shown."""
    at_base = next((r for r in ab["equal_lr"] if r["arm"] == arm and r["other"] == base and r.get("epoch") == epoch),
                   None)
    at_arm = next((r for r in ab["equal_lr"] if r["arm"] == base and r["other"] == arm and r.get("epoch") == epoch),
                  None)
    parts, verdicts = [], []
    if at_base and at_base["mean_diff"] is not None:
        d = direction(at_base)
        parts.append(f"at {base}'s lr {_signed(at_base['mean_diff'])} (CI {_ci(at_base['ci95'], signed=True)})")
        verdicts.append((f"{base}'s lr", d))
    if at_arm and at_arm["mean_diff"] is not None:  # stored as base - arm at arm's lr: flip the sign
        flipped = None if at_arm["ci95"] is None else [-at_arm["ci95"][1], -at_arm["ci95"][0]]
        d = direction(at_arm)
        parts.append(f"at {arm}'s lr {_signed(-at_arm['mean_diff'])} (CI {_ci(flipped, signed=True)})")
        verdicts.append((f"{arm}'s lr", None if d is None else -d))
    if not parts:
        return "", None, None
    dirs = [d for _, d in verdicts]
    what = f"{when} (epoch {epoch}) validation loss at equal lr"
    claim = not_shown = None
    if any(d is None for d in dirs):
        verdict = "single seed: no statistical claim"
    elif all(d == -1 for d in dirs):
        verdict = f"**{arm} is better at both lrs**: not just the effect of a different lr"
        claim = f"{arm} beats {base} in {what}"
    elif all(d == 1 for d in dirs):
        verdict = f"**{arm} is worse at both lrs**"
        claim = f"{arm} is worse than {base} in {what}"
    elif -1 in dirs and 1 in dirs:
        verdict = "better at one lr, worse at the other: the effect depends on the lr"
        not_shown = f"a consistent equal-lr effect of {arm} in {when} validation loss"
    else:
        sig = [f"{'better' if d == -1 else 'worse'} at {where}" for where, d in verdicts if d]
        verdict = ("significantly " + " and ".join(sig) + ", within seed noise at the other lr") if sig else \
            "within seed noise at both lrs"
        if 1 in dirs:
            claim = f"{arm} is worse than {base} in {when} (epoch {epoch}) validation loss at {verdicts[dirs.index(1)][0]}"
        if -1 not in dirs:
            not_shown = f"an advantage of {arm} over {base} in {what}"
    return (f"Equal-lr ablation, {when} (epoch {epoch}) validation loss, {arm} − {base}: " + "; ".join(parts)
            + f" — {verdict}."), claim, not_shown


def _conclusion(results: Results, k: int) -> list[Block]:
    arms = list(results.optimizers)
    base = baseline_arm(arms)
    epochs = int(results.config["epochs"])
    early = early_epoch(epochs)
    blocks: list[Block] = [("h", 2, "Conclusion")]
    if len(arms) == 1:
        return blocks + [("p", "Only one optimizer was run; there is nothing to compare.")]
    supported, unsupported = [], []
    for arm in arms:
        if arm == base:
            continue
        paras = []
        for metric, epoch, what, acc in (("val_loss", early, f"early (epoch {early}) validation loss", False),
                                         ("val_loss", epochs, f"final (epoch {epochs}) validation loss", False),
                                         ("test_accuracy", epochs, "test accuracy", True)):
            row = _row(results, arm, metric, epoch)
            if row is None:
                continue
            scale, digits, unit = (100.0, 2, " pp") if acc else (1.0, 4, "")
            sentence = _diff_sentence(row, what.capitalize(), digits, scale, unit)
            d = direction(row)
            if d is None:
                paras.append(sentence + ".")
                continue
            if d == 0:
                unsupported.append(f"a difference between {arm} and {base} in {what}")
                paras.append(sentence + " — within seed noise.")
            elif not _survives_holm(row):
                better = (d > 0) == acc
                claim = f"{arm} {'beats' if better else 'is worse than'} {base} in {what}"
                unsupported.append(f"{claim} (its CI excludes 0, but not after Holm's correction, p={_p(row['p_holm'])})")
                paras.append(sentence + f" — {claim} by its CI alone; not after Holm's correction over the "
                             f"{len(arms) - 1} arms (p={_p(row['p_holm'])}).")
            else:
                better = (d > 0) == acc
                claim = f"{arm} {'beats' if better else 'is worse than'} {base} in {what}"
                supported.append(claim)
                paras.append(sentence + f" — **{claim}**.")
        tt = results.optimizers[arm].summary.get("time_to_target_epochs") or []
        tb = results.optimizers[base].summary.get("time_to_target_epochs") or []
        if tt and results.extra.get("target", {}).get("value") is not None:
            paras.append(f"Time to target: {arm} reached it in {sum(h is not None for h in tt)} of {len(tt)} seeds, "
                         f"{base} in {sum(h is not None for h in tb)} of {len(tb)}.")
        ab = results.extra.get("ablation")
        if ab:
            for epoch in sorted({early, epochs}):
                sentence, claim, not_shown = _equal_lr(ab, arm, base, epoch, "early" if epoch < epochs else "final")
                if sentence:
                    paras.append(sentence)
                if claim:
                    supported.append(claim)
                if not_shown:
                    unsupported.append(not_shown)
        blocks += [("p", f"**{arm} vs {base}.** " + " ".join(paras))]
    if k > 1:
        blocks.append(("p", "Statistically supported (95% CI of the paired difference excludes 0, and against "
                            f"{base} Holm-adjusted p < {ALPHA}): "
                       + ("; ".join(supported) if supported else "nothing") + "."))
        blocks.append(("p", "Not supported by these data: "
                       + ("; ".join(unsupported) if unsupported else "nothing") + "."))
        blocks.append(("p", f"CIs are per comparison (not adjusted); with {len(arms) - 1} arm(s) against {base}, "
                            "claims against the baseline also need Holm's correction over the arms at that epoch. "
                            "The equal-lr ablation is judged on its CIs alone."))
    else:
        blocks.append(("p", "These are single training runs at one seed per optimizer: seed-to-seed noise is not "
                            "measured, so no difference above is statistically supported. `hessian-lr compare "
                            "--seeds K` repeats the finals with K seeds and reports confidence intervals."))
    return blocks


def build_document(results: Results, figures: dict[str, str] | None = None) -> list[Block]:
    """The report's blocks. ``figures`` maps a figure key to its file name (only those get an image)."""
    if "pairwise" not in results.extra:
        summarize(results)
    figures = figures or {}
    c = results.config
    k = _seeds(results)
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
    blocks += _tuned(results)
    blocks += _reproduction(results)
    blocks += _arms_table(results, k, figures)
    blocks += _pairwise_table(results)
    blocks += _time_to_target(results)
    blocks += _ablation(results, figures)
    blocks += _sensitivity(results, figures)
    blocks += _fidelity(results)
    blocks += _conclusion(results, k)
    blocks += [("h", 2, "Reproducibility"),
               ("p", "Every number above comes from `results.json`; `hessian-lr report DIR` rebuilds this report "
                     "(markdown, HTML and figures) from it without training. Versions: "
                     + ", ".join(f"{k} {v}" for k, v in results.versions.items()) + ".")]
    return blocks


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(blocks: list[Block], figures: dict[str, str] | None = None) -> str:
    figures = figures or {}
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += [f"{'#' * block[1]} {block[2]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            head, rows = block[1], block[2]
            lines.append("| " + " | ".join(_md_cell(h) for h in head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[1]}]({figures[block[2]]})", ""]
    return "\n".join(lines)


def render_markdown(results: Results, plot_name: str | None = "comparison.png",
                    figures: dict[str, str] | None = None) -> str:
    """``report.md``. ``figures`` maps figure keys (curves, sensitivity, ablation) to file names; without it
    the single ``plot_name`` figure (curves and sensitivity side by side) is shown under Results."""
    if figures is None:
        figures = {"curves": plot_name} if plot_name else {}
    return to_markdown(build_document(results, figures), figures)
