"""Verdict records as JSON-ready data (what suite.json stores)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any

__all__ = ["verdict_data"]


def verdict_data(record: Any) -> Any:
    """Any verdict record as JSON-ready data: dataclass fields (and the properties a class lists in
    ``EXPORTED``), or what a record's ``verdict_items()`` lays out; enums as their values, tuples as
    lists, non-finite floats as ``None``."""
    if callable(getattr(record, "verdict_items", None)):
        return {name: verdict_data(value) for name, value in record.verdict_items().items()}
    if is_dataclass(record) and not isinstance(record, type):
        data = {f.name: verdict_data(getattr(record, f.name)) for f in fields(record)}
        data.update({name: verdict_data(getattr(record, name)) for name in getattr(type(record), "EXPORTED", ())})
        return data
    if isinstance(record, Enum):
        return record.value
    if isinstance(record, Mapping):
        return {str(k): verdict_data(v) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [verdict_data(v) for v in record]
    if isinstance(record, float) and not math.isfinite(record):
        return None
    return record
