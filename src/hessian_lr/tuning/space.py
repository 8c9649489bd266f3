"""Search spaces: which constructor hyperparameters a study tunes, over which ranges.

A :class:`SearchSpace` maps hyperparameter names to dimensions. A name is a keyword argument of
the arm's optimizer (``lr``, ``eps``, ``weight_decay``, ``curvature_beta``, ...) or an item of
a tuple argument written with its index (``betas[1]``: the second entry of Adam's ``betas``; the
other entries keep the optimizer's default). Dimensions:

* :class:`Float` / :class:`Int` — ``low``..``high``, linear or ``log``;
* :class:`Categorical` — one of ``choices``;
* :class:`Fixed` — a constant (not tuned; still part of the space, so a change starts new studies).

Choi et al. (2019), "On Empirical Comparisons of Optimizers for Deep Learning"
(arXiv:1910.05446), show that the space decides optimizer rankings, so spaces are declared,
stored with the results and printed in the report. The budget is per arm and does not grow with
the space.

Spaces come from code (each arm's default), from the ``wide`` preset (:func:`wide_space`) or
from a TOML table (:func:`space_from_toml`)::

    [space.hessian-adam]
    lr = { low = 1e-4, high = 1e-1, log = true }
    curvature_beta = { low = 0.9, high = 0.9999 }
    "betas[1]" = { low = 0.9, high = 0.9999 }
    weight_decay = 0.0                          # fixed
    amsgrad = { choices = [false, true] }
    n_steps = { low = 1, high = 8, type = "int" }

Optuna is imported only by :meth:`SearchSpace.distributions`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = ["Float", "Int", "Categorical", "Fixed", "Dimension", "SearchSpace", "space_from_toml", "split_name",
           "assemble_hyperparameters", "wide_space", "DEFAULT_LR", "WIDE_RANGES", "PRESETS"]

_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?$")


def split_name(name: str) -> tuple[str, int | None]:
    """``"betas[1]"`` -> ``("betas", 1)``; ``"lr"`` -> ``("lr", None)``.

    Raises:
        ValueError: ``name`` is neither an identifier nor ``identifier[index]``.
    """
    match = _ITEM.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"hyperparameter name {name!r} must be an identifier or identifier[index], e.g. 'betas[1]'")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return value


def _check_range(low: float, high: float, log: bool, name: str) -> None:
    if not low < high:
        raise ValueError(f"{name}: low must be < high, got low={low!r}, high={high!r}")
    if log and low <= 0:
        raise ValueError(f"{name}: a log scale needs low > 0, got low={low!r}")


@dataclass(frozen=True)
class Float:
    """A real hyperparameter in ``[low, high]`` (log-uniform when ``log``)."""

    low: float
    high: float
    log: bool = False

    def validate(self, name: str) -> None:
        low, high = _number(self.low, f"{name}: low"), _number(self.high, f"{name}: high")
        _check_range(low, high, bool(self.log), name)

    def to_json(self) -> dict[str, Any]:
        return {"type": "float", "low": float(self.low), "high": float(self.high), "log": bool(self.log)}


@dataclass(frozen=True)
class Int:
    """An integer hyperparameter in ``[low, high]`` (log-uniform when ``log``)."""

    low: int
    high: int
    log: bool = False

    def validate(self, name: str) -> None:
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}: {bound} of an int dimension must be an integer, got {value!r}")
        _check_range(self.low, self.high, bool(self.log), name)

    def to_json(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "log": bool(self.log)}


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (booleans, numbers or strings)."""

    choices: tuple[Any, ...]

    def validate(self, name: str) -> None:
        if not isinstance(self.choices, tuple) or not self.choices:
            raise ValueError(f"{name}: choices must be a non-empty list")
        for choice in self.choices:
            if not (choice is None or isinstance(choice, (bool, int, float, str))):
                raise ValueError(f"{name}: a choice must be a bool, number or string, got {choice!r}")
            if isinstance(choice, float) and not math.isfinite(choice):
                raise ValueError(f"{name}: choices must be finite, got {choice!r}")
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"{name}: choices must be distinct, got {list(self.choices)!r}")

    def to_json(self) -> dict[str, Any]:
        return {"type": "categorical", "choices": list(self.choices)}


@dataclass(frozen=True)
class Fixed:
    """A constant: passed to the optimizer, never tuned."""

    value: Any

    def validate(self, name: str) -> None:
        value = self.value
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name}: a fixed value must be finite, got {value!r}")
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise ValueError(f"{name}: a fixed value must be a bool, number or string, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        return {"type": "fixed", "value": self.value}


Dimension = Union[Float, Int, Categorical, Fixed]


class SearchSpace(Mapping[str, Dimension]):
    """An ordered, immutable ``{name: dimension}`` mapping; names as in :func:`split_name`.

    Args:
        dimensions: the dimensions by name. Validated here: every range has ``low < high``,
            log scales have ``low > 0``, values are finite, names are well formed.

    Raises:
        ValueError: naming the offending hyperparameter.
    """

    def __init__(self, dimensions: Mapping[str, Dimension]) -> None:
        items: dict[str, Dimension] = {}
        for name, dim in dimensions.items():
            split_name(name)
            if not isinstance(dim, (Float, Int, Categorical, Fixed)):
                raise ValueError(f"{name}: expected a Float, Int, Categorical or Fixed dimension, got {dim!r}")
            dim.validate(name)
            items[name] = dim
        if not items:
            raise ValueError("a search space needs at least one hyperparameter")
        whole = {split_name(n)[0] for n in items if split_name(n)[1] is None}
        for name in items:
            base, index = split_name(name)
            if index is not None and base in whole:
                raise ValueError(f"{name}: the space sets {base!r} as a whole and an item of it")
        self._items = items

    def __getitem__(self, name: str) -> Dimension:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"SearchSpace({self.to_json()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    @property
    def tuned(self) -> tuple[str, ...]:
        """The names Optuna samples (every dimension but the fixed ones)."""
        return tuple(n for n, d in self._items.items() if not isinstance(d, Fixed))

    @property
    def fixed(self) -> dict[str, Any]:
        return {n: d.value for n, d in self._items.items() if isinstance(d, Fixed)}

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {name: dim.to_json() for name, dim in self._items.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        """The inverse of :meth:`to_json` (results.json stores spaces this way)."""
        dims: dict[str, Dimension] = {}
        for name, spec in data.items():
            kind = spec.get("type")
            if kind == "float":
                dims[name] = Float(spec["low"], spec["high"], bool(spec.get("log", False)))
            elif kind == "int":
                dims[name] = Int(spec["low"], spec["high"], bool(spec.get("log", False)))
            elif kind == "categorical":
                dims[name] = Categorical(tuple(spec["choices"]))
            elif kind == "fixed":
                dims[name] = Fixed(spec["value"])
            else:
                raise ValueError(f"{name}: unknown dimension type {kind!r}")
        return cls(dims)

    def fingerprint(self) -> str:
        """A canonical text of the space (part of a study's fingerprint: another space, other studies)."""
        return json.dumps(self.to_json(), sort_keys=True)

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna distributions of the tuned dimensions, in order."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, BaseDistribution] = {}
        for name, dim in self._items.items():
            if isinstance(dim, Float):
                out[name] = FloatDistribution(float(dim.low), float(dim.high), log=dim.log)
            elif isinstance(dim, Int):
                out[name] = IntDistribution(dim.low, dim.high, log=dim.log)
            elif isinstance(dim, Categorical):
                out[name] = CategoricalDistribution(dim.choices)
        return out

    def corners(self) -> list[dict[str, Any]]:
        """Two points that span the space: every dimension at its low end, then at its high end
        (first and last choice of a categorical). Building the optimizer at both checks a space
        before any training."""
        def at(end: int) -> dict[str, Any]:
            point: dict[str, Any] = {}
            for name, dim in self._items.items():
                if isinstance(dim, (Float, Int)):
                    point[name] = dim.low if end == 0 else dim.high
                elif isinstance(dim, Categorical):
                    point[name] = dim.choices[0] if end == 0 else dim.choices[-1]
                else:
                    point[name] = dim.value
            return point

        return [at(0), at(1)]

    def replace(self, **dimensions: Dimension) -> SearchSpace:
        return SearchSpace({**self._items, **dimensions})


def assemble_hyperparameters(point: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a point of a space (``{"lr": 1e-3, "betas[1]": 0.99}``) into constructor keyword
    arguments (``{"lr": 1e-3, "betas": (0.9, 0.99)}``).

    Args:
        point: values by space name.
        defaults: the optimizer's defaults by argument name; a tuple item takes the other items
            from here.

    Raises:
        ValueError: an item of an argument without a tuple default, or an index out of range.
    """
    out: dict[str, Any] = {}
    items: dict[str, dict[int, Any]] = {}
    for name, value in point.items():
        base, index = split_name(name)
        if index is None:
            out[base] = value
        else:
            items.setdefault(base, {})[index] = value
    for base, by_index in items.items():
        default = defaults.get(base)
        if not isinstance(default, (tuple, list)):
            raise ValueError(f"{base}[{min(by_index)}]: the optimizer declares no tuple default for {base!r}, "
                             f"so its other items are unknown; set {base!r} as a whole instead")
        values = list(default)
        for index, value in by_index.items():
            if index >= len(values):
                raise ValueError(f"{base}[{index}]: {base!r} has {len(values)} items (indices 0..{len(values) - 1})")
            values[index] = value
        out[base] = tuple(values)
    return out


def _dimension_from_toml(name: str, spec: Any) -> Dimension:
    """One TOML entry: a bare value (fixed), ``{value = v}``, ``{choices = [...]}`` or
    ``{low, high, log?, type?}`` (``type`` is ``"float"``, the default, or ``"int"``)."""
    if not isinstance(spec, dict):
        if isinstance(spec, (list, dict)):
            raise ValueError(f"{name}: expected a value or a table, got {spec!r}")
        return Fixed(spec)
    keys = set(spec)
    if keys == {"value"}:
        return Fixed(spec["value"])
    if keys == {"choices"}:
        if not isinstance(spec["choices"], list):
            raise ValueError(f"{name}: choices must be a list, got {spec['choices']!r}")
        return Categorical(tuple(spec["choices"]))
    allowed = {"low", "high", "log", "type"}
    if not {"low", "high"} <= keys or keys - allowed:
        raise ValueError(f"{name}: a range needs 'low' and 'high' (and optionally 'log', 'type'); got keys "
                         f"{sorted(keys)}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{name}: log must be true or false, got {log!r}")
    kind = spec.get("type", "float")
    if kind == "int":
        return Int(spec["low"], spec["high"], log)
    if kind != "float":
        raise ValueError(f"{name}: type must be 'float' or 'int', got {kind!r}")
    low, high = _number(spec["low"], f"{name}: low"), _number(spec["high"], f"{name}: high")
    return Float(float(low), float(high), log)


def space_from_toml(table: Any, where: str) -> SearchSpace:
    """A space from one ``[space.ARM]`` TOML table; errors name ``where`` (e.g. ``space.adam``)."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of hyperparameters, got {table!r}")
    try:
        return SearchSpace({name: _dimension_from_toml(name, spec) for name, spec in table.items()})
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


# The seed write-up's protocol: the lr alone, log-uniform over three decades.
DEFAULT_LR = Float(1e-4, 1e-1, log=True)

# Ranges of the ``wide`` preset (Choi et al. 2019 tune lr, momentum/beta1, beta2, eps and weight
# decay). Each applies only where the arm's optimizer takes the hyperparameter.
WIDE_RANGES: dict[str, Dimension] = {
    "lr": DEFAULT_LR,
    "momentum": Float(0.5, 0.99),
    "betas[0]": Float(0.8, 0.99),
    "betas[1]": Float(0.9, 0.9999),
    "eps": Float(1e-10, 1e-6, log=True),
    "weight_decay": Float(1e-6, 1e-2, log=True),
    "curvature_beta": Float(0.9, 0.9999),
    "curvature_eps": Float(1e-12, 1e-6, log=True),
}
PRESETS = ("default", "wide")


def wide_space(default: SearchSpace, defaults: Mapping[str, Any]) -> SearchSpace:
    """The ``wide`` preset for an arm: its default space, plus every :data:`WIDE_RANGES`
    dimension whose argument the arm's optimizer takes (``defaults``: argument -> default).

    ``betas[i]`` applies where ``betas`` is a tuple with an item ``i``; a fixed lr (an lr-free
    optimizer such as Prodigy) stays fixed.
    """
    dims = dict(default.items())
    for name, dim in WIDE_RANGES.items():
        base, index = split_name(name)
        if base not in defaults or (name in dims and isinstance(dims[name], Fixed)):
            continue
        value = defaults[base]
        if index is not None and not (isinstance(value, (tuple, list)) and index < len(value)):
            continue
        if index is None and isinstance(value, bool):
            continue
        dims[name] = dim
    return SearchSpace(dims)
