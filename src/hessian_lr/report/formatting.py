"""How the report writes numbers: one place, so tables (``document.py``) and verdict sentences
(``verdicts.py``) print the same value the same way. ``None`` (undefined: a diverged run, a
single seed's missing interval) is always written ``—``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MISSING", "fmt", "fmt_signed", "fmt_ci", "fmt_p", "fmt_p_inline", "fmt_pct", "fmt_pct_ci",
           "fmt_pct_signed", "fmt_mean_ci", "fmt_median_range"]

MISSING = "—"


def fmt(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals, or ``—``."""
    return MISSING if value is None else f"{value:.{digits}f}"


def fmt_signed(value: float | None, digits: int = 4) -> str:
    """``value`` with an explicit sign (``+0.0123``), or ``—``."""
    return MISSING if value is None else f"{value:+.{digits}f}"


def fmt_ci(ci: Sequence[float] | None, digits: int = 4, signed: bool = False) -> str:
    """An interval ``[low, high]`` (signed bounds for differences), or ``—``."""
    if ci is None:
        return MISSING
    bound = fmt_signed if signed else fmt
    return f"[{bound(ci[0], digits)}, {bound(ci[1], digits)}]"


def fmt_p(p: float | None) -> str:
    """A p-value with four decimals, ``<0.0001`` below that, or ``—``."""
    if p is None:
        return MISSING
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def fmt_p_inline(p: float | None) -> str:
    """``p=0.0123`` or ``p<0.0001`` inside a sentence."""
    text = fmt_p(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def fmt_pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal (``0.5912`` → ``59.1%``), or ``—``."""
    return MISSING if value is None else f"{100 * value:.1f}%"


def fmt_pct_signed(value: float | None) -> str:
    """A relative change as a signed percentage with one decimal (``-0.0512`` → ``-5.1%``), or ``—``."""
    return MISSING if value is None else f"{100 * value:+.1f}%"


def fmt_pct_ci(ci: Sequence[float] | None) -> str:
    """An interval of fractions as percentages, or ``—``."""
    return MISSING if ci is None else f"[{100 * ci[0]:.1f}%, {100 * ci[1]:.1f}%]"


def fmt_mean_ci(mean: float | None, ci: Sequence[float] | None, digits: int = 4) -> str:
    """``mean [low, high]``, or the mean alone when there is no interval."""
    return fmt(mean, digits) if ci is None else f"{fmt(mean, digits)} {fmt_ci(ci, digits)}"


def fmt_median_range(median: float | None, low: float | None, high: float | None, digits: int = 4) -> str:
    """``median [min, max]`` over repeated studies, or ``—`` when there is no median yet."""
    return MISSING if median is None else f"{fmt(median, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"
