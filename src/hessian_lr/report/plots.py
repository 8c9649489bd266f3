"""Report figures, drawn from ``Results`` alone, as reproducible PNG bytes.

Every figure is rendered with a fixed size, dpi and no ``Software`` metadata, so the same results
give byte-identical files (``hessian-lr report`` rebuilds them exactly).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogFormatter, LogLocator, MaxNLocator  # noqa: E402

from hessian_lr.report.budget import BudgetCurve  # noqa: E402
from hessian_lr.report.profiles import PerformanceProfiles, rho_steps  # noqa: E402
from hessian_lr.report.spaces import (arm_space, best_trial, hyperparameter_names, is_categorical, is_log,  # noqa: E402
                                      trial_point, tuned_names, value_text)
from hessian_lr.results import Results, atomic_write_bytes  # noqa: E402

__all__ = ["save_comparison_plot", "figure_bytes", "curves_png", "sensitivity_png", "ablation_png", "profiles_png",
           "budget_curves_png", "fidelity_training_png", "DPI"]

DPI = 110
MARKERS = "os^vD<>phX*P"
LINESTYLES = ("-", "--", "-.", ":")  # tied arms draw the same curve: the styles keep each visible
CLOCK_NAMES = {"steps": "steps", "wall_s": "wall seconds"}


def figure_bytes(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _figure(columns: int, width: float, height: float = 4.6, rows: int = 1) -> tuple[plt.Figure, list[plt.Axes]]:
    """``rows`` × ``columns`` axes (row by row in the list), with fixed margins in inches that fit the
    labels, titles and tick labels used here. (``constrained_layout`` measures every text in an
    extra draw: it doubled each figure's rendering time, about 0.1 s per figure.)"""
    fig, axes = plt.subplots(rows, columns, figsize=(width, height), squeeze=False)
    gap, row_gap = 0.85, 0.85  # inches between axes: the y label and tick labels; the x label and the title
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.2 / width, bottom=0.55 / height, top=1 - 0.35 / height,
                        wspace=gap * columns / (width - 1.0 - gap * (columns - 1)),
                        hspace=row_gap * rows / (height - 0.9 - row_gap * (rows - 1)))
    return fig, [ax for row in axes for ax in row]


def _log_lr_axis(ax: plt.Axes, label: str) -> None:
    """Log-scaled lr axis labelled ``1e-03``: plain text, not mathtext (whose parser costs ~0.1 s
    to set up in every process that draws its first ``10^{-3}``), and minor ticks at 2 and 5 of
    each decade only (matplotlib's eight per decade were a third of the figures' drawing time)."""
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))


def _color(index: int, count: int) -> tuple:
    if count <= 10:
        return plt.get_cmap("tab10")(index)
    return plt.get_cmap("tab20")(index % 20)


def _draw_curves(ax: plt.Axes, results: Results, start_epoch: int = 0) -> None:
    arms = list(results.optimizers)
    for i, (arm, r) in enumerate(results.optimizers.items()):
        color = _color(i, len(arms))
        mean = r.summary.get("curve_mean") or r.final["val_loss_curve"]
        bands = r.summary.get("curve_ci95") or [None] * len(mean)
        epochs = [e for e, v in enumerate(mean) if v is not None and e >= start_epoch]
        n = r.summary.get("n_seeds", 1)
        details = ([] if r.best_lr is None else [f"lr={r.best_lr:.3g}"]) + ([f"mean of {n} seeds"] if n > 1 else [])
        label = arm + (f" ({', '.join(details)})" if details else "")
        ax.plot(epochs, [mean[e] for e in epochs], color=color, marker=MARKERS[i % len(MARKERS)], markersize=3,
                linewidth=1.3, label=label)
        band = [e for e in epochs if bands[e] is not None]
        if band:
            ax.fill_between(band, [bands[e][0] for e in band], [bands[e][1] for e in band], color=color, alpha=0.18,
                            linewidth=0)
    ax.grid(True, alpha=0.3)


def curves_png(results: Results) -> bytes:
    """Validation loss per epoch: the mean over seeds with its 95% CI band; right: the second half."""
    epochs = int(results.config["epochs"])
    fig, (full, zoom) = _figure(2, 12)
    _draw_curves(full, results)
    _draw_curves(zoom, results, start_epoch=max(1, epochs // 2))
    k = max(r.summary.get("n_seeds", 1) for r in results.optimizers.values())
    band = "shaded: 95% CI of the mean" if k > 1 else "single seed: no CI"
    full.set(xlabel="epoch", ylabel="validation loss (nats)", title=f"{results.config.get('workload')}: {band}")
    zoom.set(xlabel="epoch", ylabel="validation loss (nats)", title=f"epochs {max(1, epochs // 2)}-{epochs}")
    full.legend(fontsize=7)
    return figure_bytes(fig)


def _panel(ax: plt.Axes, results: Results, name: str) -> None:
    """One hyperparameter's panel of the sensitivity figure: every trial of every arm that tunes it,
    objective against value (x: diverged, drawn at the top; dotted: the arm's best trial)."""
    spaces = {arm: arm_space(results, arm) for arm in results.optimizers}
    specs = {arm: space[name] for arm, space in spaces.items() if name in tuned_names(space)}
    arms = list(results.optimizers)
    values = [t.value for r in results.optimizers.values() for t in r.trials if t.value is not None]
    top = max(values, default=1.0)
    categorical = any(is_categorical(spec) for spec in specs.values())
    choices = sorted({value_text(c) for spec in specs.values() for c in spec.get("choices") or []})
    for arm, spec in specs.items():
        i = arms.index(arm)
        color = _color(i, len(arms))
        offset = (list(specs).index(arm) - (len(specs) - 1) / 2) * 0.08  # arms side by side on a category

        def x(value: Any) -> float:
            return choices.index(value_text(value)) + offset if categorical else value

        trials = [(trial_point(t).get(name), t.value) for t in results.optimizers[arm].trials]
        done = [(x(v), y) for v, y in trials if v is not None and y is not None]
        failed = [x(v) for v, y in trials if v is not None and y is None]
        ax.scatter([d[0] for d in done], [d[1] for d in done], color=color, marker=MARKERS[i % len(MARKERS)], s=16,
                   alpha=0.85, label=arm)
        if failed:
            ax.scatter(failed, [top * 1.02] * len(failed), color=color, marker="x", s=30)
        best = best_trial(results.optimizers[arm])
        if best is not None and trial_point(best).get(name) is not None:
            ax.axvline(x(trial_point(best)[name]), color=color, linestyle=":", linewidth=1)
    if categorical:
        ax.set_xticks(range(len(choices)), choices)
        ax.set_xlim(-0.5, len(choices) - 0.5)
        ax.set_xlabel(f"{name} (categorical)")
    elif all(is_log(spec) for spec in specs.values()):
        _log_lr_axis(ax, f"{name} (log scale)")
    else:
        ax.set_xlabel(name)
    ax.set(ylabel=f"val loss after {results.config.get('epochs')} epochs")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)


def sensitivity_png(results: Results) -> bytes:
    """Every tuning trial's objective against each tuned hyperparameter: one panel per hyperparameter
    that any arm tunes (``lr`` first), with every arm that tunes it; a log axis for log dimensions,
    categories for categorical ones (x: diverged; dotted: the arm's best trial of study 0)."""
    spaces = {arm: arm_space(results, arm) for arm in results.optimizers}
    names = hyperparameter_names(spaces, tuned_only=True) or ["lr"]
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    fig, axes = _figure(columns, 8 if columns == 1 else 4.6 * columns, 4.6 if rows == 1 else 3.6 * rows, rows)
    for ax, name in zip(axes, names):
        _panel(ax, results, name)
        ax.set_title(f"{name}: every tuning trial", fontsize=9)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    return figure_bytes(fig)


def ablation_png(results: Results) -> bytes | None:
    """Final validation loss (mean, 95% CI) of each arm at every arm's tuned lr."""
    cells = (results.extra.get("ablation") or {}).get("cells")
    if not cells:
        return None
    arms = list(results.optimizers)
    fig, (ax,) = _figure(1, 8)
    for i, arm in enumerate(arms):
        mine = sorted((c for c in cells if c["arm"] == arm and c["val_loss_mean"] is not None), key=lambda c: c["lr"])
        if not mine:
            continue
        color = _color(i, len(arms))
        lrs, means = [c["lr"] for c in mine], [c["val_loss_mean"] for c in mine]
        low = [m - c["val_loss_ci95"][0] if c["val_loss_ci95"] else 0.0 for m, c in zip(means, mine)]
        high = [c["val_loss_ci95"][1] - m if c["val_loss_ci95"] else 0.0 for m, c in zip(means, mine)]
        ax.errorbar(lrs, means, yerr=[low, high], color=color, marker=MARKERS[i % len(MARKERS)], markersize=4,
                    capsize=3, linewidth=1, label=arm)
        own = [c for c in mine if c["lr_of"] == arm]
        if own:
            ax.scatter([own[0]["lr"]], [own[0]["val_loss_mean"]], s=90, facecolors="none", edgecolors=color)
    _log_lr_axis(ax, "learning rate (each arm's tuned lr)")
    ax.set(ylabel="final validation loss",
           title="Equal-lr ablation: every arm at every tuned lr (circled: own lr)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return figure_bytes(fig)


def save_comparison_plot(results: Results, path: Path) -> None:
    """``comparison.png``: the curves (mean and CI band when there are seeds) beside the lr sensitivity."""
    fig, (curves, sensitivity) = _figure(2, 12, 4.5)
    _draw_curves(curves, results)
    curves.set(xlabel="epoch", ylabel="validation loss (cross-entropy, nats)",
               title=f"Tuned runs on {results.config.get('workload', '')} (seed {results.config.get('seed')})")
    curves.legend(fontsize=7)
    arms = list(results.optimizers)
    for i, (arm, r) in enumerate(results.optimizers.items()):
        color = _color(i, len(arms))
        done = [t for t in r.trials if t.value is not None and t.lr is not None]
        sensitivity.scatter([t.lr for t in done], [t.value for t in done], color=color, s=18, label=arm)
        if r.best_lr is not None:
            sensitivity.axvline(r.best_lr, color=color, linestyle=":", linewidth=1)
    _log_lr_axis(sensitivity, "learning rate (log scale)")
    sensitivity.set(ylabel=f"validation loss after {results.config.get('epochs')} epochs",
                    title="Every tuning trial (dotted: best lr)")
    sensitivity.grid(True, alpha=0.3)
    sensitivity.legend(fontsize=7)
    atomic_write_bytes(path, figure_bytes(fig))


def profiles_png(profiles: PerformanceProfiles | Sequence[PerformanceProfiles], title: str | None = None) -> bytes:
    """``profiles.png``: every arm's performance profile ρ(τ) on τ ∈ [1, τ_max], drawn as the exact
    step function (``profiles.rho_steps``), each arm's score in the legend; one panel per clock.

    Args:
        profiles: ``profiles.performance_profiles``'s result, or several (one per clock: steps and
            wall seconds), drawn side by side.
        title: the title of a single panel; by default each names its clock and the number of workloads.

    Returns:
        PNG bytes, identical for identical profiles.
    """
    panels = [profiles] if isinstance(profiles, PerformanceProfiles) else list(profiles)
    fig, axes = _figure(len(panels), 8 if len(panels) == 1 else 6.5 * len(panels))
    for ax, p in zip(axes, panels):
        for i, arm in enumerate(p.arms):
            taus, values = rho_steps(p.ratios_of(arm), p.tau_max)
            ax.step(taus, values, where="post", color=_color(i, len(p.arms)),
                    linestyle=LINESTYLES[i % len(LINESTYLES)], linewidth=1.5,
                    label=f"{arm} (score {p.scores[arm]:.3f})")
        clock = CLOCK_NAMES.get(p.clock, p.clock)
        ax.set(xlim=(1.0, p.tau_max), ylim=(-0.03, 1.03),
               xlabel=f"τ (time to target within τ × the fastest arm, in {clock})",
               ylabel="fraction of workloads ρ(τ)",
               title=(title if title and len(panels) == 1 else
                      f"Performance profiles over {len(p.workloads)} workload(s), {clock}"))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return figure_bytes(fig)


def budget_curves_png(curves: dict[str, BudgetCurve], title: str | None = None) -> bytes:
    """Budget curves: per arm the median over studies of the best validation loss after n trials
    (line, a marker per budget) and the range over the studies (band, where every study has a
    successful trial).

    Args:
        curves: arm → ``budget.budget_curve`` of its studies.
        title: the axes' title; by default it says how many studies the medians are over.

    Returns:
        PNG bytes, identical for identical curves.
    """
    fig, (ax,) = _figure(1, 8)
    for i, (arm, curve) in enumerate(curves.items()):
        color = _color(i, len(curves))
        line = [k for k, m in enumerate(curve.median) if m is not None]
        ax.plot([curve.budgets[k] for k in line], [curve.median[k] for k in line], color=color,
                marker=MARKERS[i % len(MARKERS)], markersize=3, linewidth=1.3,
                label=f"{arm} ({curve.studies} stud{'ies' if curve.studies != 1 else 'y'})")
        band = [k for k in range(len(curve.budgets)) if curve.low[k] is not None and curve.high[k] is not None]
        if curve.studies > 1 and band:
            ax.fill_between([curve.budgets[k] for k in band], [curve.low[k] for k in band],
                            [curve.high[k] for k in band], color=color, alpha=0.18, linewidth=0)
    studies = {c.studies for c in curves.values()}
    over = f"{studies.pop()} tuning studies" if len(studies) == 1 else "each arm's tuning studies"
    ax.set(xlabel="tuning trials n", ylabel="best validation loss after n trials",
           title=title or f"Budget curves: median over {over} (shaded: min-max over studies)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return figure_bytes(fig)


def fidelity_training_png(panels: Sequence[tuple[str, Sequence[Any]]]) -> bytes:
    """Fidelity against training: per base one panel, one point per (workload, estimator) — x the
    estimator's fidelity on that workload, y its arm's final validation loss as a rank within the
    workload's estimators around that base, scaled to [0, 1] (0: the lowest loss; a diverged arm
    ranks last), so that workloads share the axis. Colour: the estimator; marker: the workload.

    Args:
        panels: ``(title, groups)`` per panel; each group has ``workload``, ``estimators``,
            ``fidelity`` and ``loss_rank`` (``verdicts.estimator_study.FidelityGroup``).

    Returns:
        PNG bytes, identical for identical groups.
    """
    estimators = list(dict.fromkeys(e for _, groups in panels for g in groups for e in g.estimators))
    workloads = list(dict.fromkeys(g.workload for _, groups in panels for g in groups))
    fig, axes = _figure(len(panels), 8 if len(panels) == 1 else 6.5 * len(panels))
    for ax, (title, groups) in zip(axes, panels):
        drawn: set[str] = set()
        for g in groups:
            marker = MARKERS[workloads.index(g.workload) % len(MARKERS)]
            for estimator, x, y in zip(g.estimators, g.fidelity, g.loss_rank):
                index = estimators.index(estimator)
                ax.scatter([x], [y], color=_color(index, len(estimators)), marker=marker, s=30, alpha=0.85,
                           label=estimator if estimator not in drawn else None)
                drawn.add(estimator)
        for i, workload in enumerate(workloads):  # the markers' key, in grey
            ax.scatter([], [], color="0.4", marker=MARKERS[i % len(MARKERS)], s=30, label=workload)
        ax.set(ylim=(-0.05, 1.05), xlabel="fidelity (mean Spearman with the exact diagonal over the checkpoints)",
               ylabel="final val loss, rank within the workload (0 = lowest)", title=title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, ncol=2, loc="best")
    return figure_bytes(fig)
