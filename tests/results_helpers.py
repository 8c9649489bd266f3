"""Comparing results.json files of runs that should agree in everything but timing."""

from __future__ import annotations

from typing import Any

# Fields that legitimately differ between identical runs (or name the run's place).
SETTING_KEYS = ("out", "workers")


def _is_timing(key: str) -> bool:
    return "wall_s" in key or key == "epoch_s_mean"


def without_timing(data: Any) -> Any:
    """``data`` with wall-clock fields (and statistics of them) and placement settings removed."""
    if isinstance(data, dict):
        return {k: without_timing(v) for k, v in data.items() if not _is_timing(k) and k not in SETTING_KEYS}
    if isinstance(data, list):
        return [without_timing(v) for v in data]
    return data
