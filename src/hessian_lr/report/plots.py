"""The comparison figure: tuned validation-loss curves and every trial's objective against lr."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from hessian_lr.results import Results, atomic_write_bytes  # noqa: E402

__all__ = ["save_comparison_plot"]


def _save(fig: plt.Figure, path: Path) -> None:
    """Write atomically; fixed metadata keeps the bytes reproducible."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def save_comparison_plot(results: Results, path: Path) -> None:
    fig, (curves, sensitivity) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for index, (arm, arm_results) in enumerate(results.optimizers.items()):
        color = f"C{index}"
        curve = arm_results.final["val_loss_curve"]
        epochs = [e for e, v in enumerate(curve) if v is not None]
        curves.plot(epochs, [curve[e] for e in epochs], color=color, marker="o", markersize=3,
                    label=f"{arm} (lr={arm_results.best_lr:.3g})")
        done = [t for t in arm_results.trials if t.value is not None]
        failed = [t for t in arm_results.trials if t.value is None]
        sensitivity.scatter([t.lr for t in done], [t.value for t in done], color=color, s=22, label=arm)
        if failed:
            top = max((t.value for t in done), default=1.0)
            sensitivity.scatter([t.lr for t in failed], [top] * len(failed), color=color, marker="x", s=40,
                                label=f"{arm}: diverged")
        sensitivity.axvline(arm_results.best_lr, color=color, linestyle=":", linewidth=1)
    workload = results.config.get("workload", "")
    curves.set(xlabel="epoch", ylabel="validation loss (cross-entropy, nats)",
               title=f"Tuned runs on {workload} (seed {results.config.get('seed')})")
    sensitivity.set(xscale="log", xlabel="learning rate (log scale)",
                    ylabel=f"validation loss after {results.config.get('epochs')} epochs",
                    title="Every tuning trial (dotted: best lr)")
    for ax in (curves, sensitivity):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
