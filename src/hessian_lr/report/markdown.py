"""``report.md`` in the shape of the original write-up, generated from ``Results`` alone."""

from __future__ import annotations

from hessian_lr.results import Results

__all__ = ["render_markdown", "early_epoch", "ORIGINAL_BEST_LR"]

# The original write-up's tuned learning rates, shown beside ours (never used to set anything).
ORIGINAL_BEST_LR = {"adam": 0.00524, "hessian-adam": 0.00271}


def early_epoch(epochs: int) -> int:
    """The epoch the report calls "early": the first fifth of the budget (at least epoch 1)."""
    return max(1, round(epochs / 5))


def _fmt(value: float | None, digits: int = 4) -> str:
    return "diverged" if value is None else f"{value:.{digits}f}"


def _compare_sentence(name_a: str, a: float | None, name_b: str, b: float | None, when: str) -> str:
    if a is None or b is None:
        return f"{when}, a comparison is impossible: {name_a if a is None else name_b} diverged."
    if a == b:
        return f"{when}, {name_a} and {name_b} reach the same validation loss ({a:.4f})."
    low, high = (name_a, name_b) if a < b else (name_b, name_a)
    lo, hi = sorted((a, b))
    return (f"{when}, **{low}** has the lower validation loss: {lo:.4f} vs {hi:.4f} "
            f"({hi - lo:.4f} lower, {100 * (hi - lo) / hi:.1f}%).")


def render_markdown(results: Results, plot_name: str = "comparison.png") -> str:
    config = results.config
    arms = list(results.optimizers)
    epochs = config["epochs"]
    early = early_epoch(epochs)
    lines = [
        f"# HessianLRAdaptation vs tuned baselines on {config['workload']}",
        "",
        "## Hypothesis",
        "",
        "Rescaling each gradient by 1/sqrt(running average of (g_t - g_(t-1))^2), a crude estimate of the "
        "Hessian diagonal, before the base optimizer steps makes training converge faster than the base "
        "optimizer alone, each with its own tuned learning rate.",
        "",
        "## Method",
        "",
        f"- Workload `{config['workload']}`; training rows only for training, a fixed validation split for "
        "tuning, the test rows read once at the end.",
        f"- Each optimizer's learning rate tuned with Optuna TPE (sampler seed {config['seed']}), "
        f"{config['trials']} trials, log-uniform in [{config['lr_low']:g}, {config['lr_high']:g}]; objective: "
        f"validation loss after {epochs} epochs.",
        f"- The best learning rate of each trained again for {epochs} epochs with seed {config['seed']}.",
        f"- One intra-op thread per process ({config['threads']}), "
        f"torch {results.versions.get('torch')}, optuna {results.versions.get('optuna')}.",
        "",
        "## Tuned learning rates",
        "",
        "| optimizer | best lr | original write-up | tuning objective | trials (finished / diverged) |",
        "|---|---|---|---|---|",
    ]
    for arm in arms:
        r = results.optimizers[arm]
        failed = sum(t.value is None for t in r.trials)
        original = ORIGINAL_BEST_LR.get(arm)
        lines.append(f"| {arm} | {r.best_lr:.5f} | {'—' if original is None else f'{original:.5f}'} | "
                     f"{r.best_value:.4f} | {len(r.trials)} / {failed} |")
    ordered = sorted(arms, key=lambda a: results.optimizers[a].best_lr)
    if len(arms) > 1:
        lines += ["", "Ordered by tuned learning rate (lowest first): "
                  + " < ".join(f"{a} ({results.optimizers[a].best_lr:.5f})" for a in ordered) + "."]
    lines += [
        "",
        "## Results",
        "",
        f"![validation-loss curves and tuning trials]({plot_name})",
        "",
        f"| optimizer | val loss, epoch {early} | final val loss (epoch {epochs}) | test loss | test accuracy | "
        "train wall (s) |",
        "|---|---|---|---|---|---|",
    ]
    for arm in arms:
        final = results.optimizers[arm].final
        curve = final["val_loss_curve"]
        at_early = curve[early] if early < len(curve) else None
        accuracy = final.get("test_accuracy")
        lines.append(f"| {arm} | {_fmt(at_early)} | {_fmt(final['val_loss'])} | {_fmt(final.get('test_loss'))} | "
                     f"{'—' if accuracy is None else f'{100 * accuracy:.1f}%'} | {final['wall_s']:.2f} |")

    lines += ["", "## Conclusion", ""]
    baseline = arms[0]
    if len(arms) == 1:
        lines.append("Only one optimizer was run; there is nothing to compare.")
    for arm in arms[1:]:
        a_curve = results.optimizers[arm].final["val_loss_curve"]
        b_curve = results.optimizers[baseline].final["val_loss_curve"]

        def at(curve: list, epoch: int) -> float | None:
            return curve[epoch] if epoch < len(curve) else None

        early_sentence = _compare_sentence(arm, at(a_curve, early), baseline, at(b_curve, early), f"Early (epoch {early})")
        final_sentence = _compare_sentence(arm, at(a_curve, epochs), baseline, at(b_curve, epochs),
                                           f"At the end (epoch {epochs})")
        a_early, b_early = at(a_curve, early), at(b_curve, early)
        a_end, b_end = at(a_curve, epochs), at(b_curve, epochs)
        claim = (None not in (a_early, b_early, a_end, b_end) and a_early < b_early and b_end < a_end)
        lines += [
            f"**{arm} vs {baseline}.** {early_sentence} {final_sentence}",
            "",
            f"The original write-up's claim — {arm} faster early, {baseline} catching up and ending slightly lower — "
            f"is **{'reproduced' if claim else 'not reproduced'}** by this run.",
            "",
        ]
    lines += [
        "These are single training runs at one seed per optimizer: seed-to-seed noise is not measured here, so "
        "differences of this size may not be real. `hessian-lr compare --seeds K` repeats the finals with K "
        "seeds and reports confidence intervals.",
        "",
    ]
    return "\n".join(lines)
