"""How faithfully each curvature estimator tracks the exact Hessian diagonal, read from a workload's
``fidelity.json`` (``analysis.fidelity``'s result) for the questions that set training beside it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["EstimatorFidelity", "fidelity_records", "fidelity_text"]


@dataclass(frozen=True)
class EstimatorFidelity:
    """One estimator's agreement with the exact Hessian diagonal (``analysis.fidelity``) at the first
    and the last checkpoint: Spearman's rank correlation and the Pearson correlation of the log
    magnitudes, over all parameters."""

    estimator: str
    steps: tuple[int, int]
    spearman: tuple[float | None, float | None]
    log_pearson: tuple[float | None, float | None]


def fidelity_records(fidelity: Mapping[str, Any] | None) -> tuple[EstimatorFidelity, ...]:
    """The estimators of a ``fidelity.json`` (``run_fidelity``'s result; references left out).

    Args:
        fidelity: the dict, or ``None`` / another shape (then there are none).

    Returns:
        One record per estimator, in the file's order.
    """
    if not isinstance(fidelity, Mapping) or not fidelity.get("checkpoints") or "estimators" not in fidelity:
        return ()
    steps = list(fidelity["checkpoints"])

    def ends(values: Sequence[float | None] | None) -> tuple[float | None, float | None]:
        values = list(values or [])
        return (values[0], values[-1]) if values else (None, None)

    return tuple(EstimatorFidelity(str(name), (int(steps[0]), int(steps[-1])), ends(series.get("spearman")),
                                   ends(series.get("log_pearson")))
                 for name, series in fidelity["estimators"].items())


def fidelity_text(records: Sequence[EstimatorFidelity]) -> str:
    """``at step 700, Spearman with the exact diagonal: grad-diff 0.985, secant 0.902 (most faithful: grad-diff)``."""
    known = [r for r in records if r.spearman[1] is not None]
    if not known:
        return "fidelity was not measured on this workload"
    best = max(known, key=lambda r: r.spearman[1])
    values = ", ".join(f"{r.estimator} {r.spearman[1]:.3f}" for r in known)
    return f"at step {known[0].steps[1]}, Spearman with the exact diagonal: {values} (most faithful: {best.estimator})"
