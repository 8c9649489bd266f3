"""Small text helpers the verdict sentences share: lists of names, counted nouns, relations."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["names", "counted", "relation"]


def names(items: Sequence[str]) -> str:
    """``a, b, c``; ``none`` for an empty list."""
    return ", ".join(items) if items else "none"


def counted(count: int, word: str) -> str:
    """``1 workload``, ``3 workloads``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def relation(a: float, b: float) -> str:
    """How ``a`` compares with ``b``: ``lower than``, ``higher than`` or ``equal to``."""
    return "lower than" if a < b else "higher than" if a > b else "equal to"
