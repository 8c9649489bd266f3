"""The grammar of arm names: ``<base>``, ``hessian-<base>`` and ``hessian-<base>-<estimator>``.

Every arm — built-in, from pytorch-optimizer, or an import path ``package.module:name`` — can be
wrapped in :class:`~hessian_lr.optim.HessianLRAdaptation` by name:

* ``hessian-<base>`` wraps ``<base>`` with the write-up's estimator (``grad-diff``);
* ``hessian-<base>-<estimator>`` with another one (``hessian-lion-gauss-newton``,
  ``hessian-my_pkg.mod:MyOpt-secant``).

The estimator suffix is matched against the registered estimator names, longest first (so
``-secant-rms`` is never read as ``-secant``), which keeps the grammar unambiguous for bases
whose names hold hyphens (``schedulefree-adamw``) or a ``:`` (import paths).

This module only parses and classifies names; :mod:`hessian_lr.arms.registry` builds the arms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["WRAPPED_PREFIX", "REFERENCE_ESTIMATOR", "NORMALISES", "WrappedName", "parse_wrapped", "wrapped_name",
           "estimator_arms", "normalises"]

WRAPPED_PREFIX = "hessian-"
REFERENCE_ESTIMATOR = "grad-diff"  # the write-up's estimator: what ``hessian-<base>`` uses
# Whether a base optimizer divides each coordinate by a running scale of its own (as Adam does),
# which partly undoes the wrapper's rescaling; bases not listed are not classified.
NORMALISES = {"adam": True, "adamw": True, "sgd": False}


@dataclass(frozen=True)
class WrappedName:
    """A parsed ``hessian-<base>[-<estimator>]`` name."""

    base: str
    estimator: str = REFERENCE_ESTIMATOR


def _estimator_names() -> list[str]:
    from hessian_lr.optim.estimators import ESTIMATORS

    return sorted(ESTIMATORS, key=len, reverse=True)


def parse_wrapped(name: str) -> WrappedName | None:
    """``hessian-<base>[-<estimator>]`` → its base and estimator; None for any other name.

    Args:
        name: an arm name.

    Returns:
        The parsed name, or None when ``name`` does not start with ``hessian-`` or nothing
        follows it. Whether the base exists is not checked here.
    """
    if not name.startswith(WRAPPED_PREFIX) or len(name) == len(WRAPPED_PREFIX):
        return None
    rest = name[len(WRAPPED_PREFIX):]
    for estimator in _estimator_names():
        suffix = f"-{estimator}"
        if rest.endswith(suffix) and len(rest) > len(suffix):
            return WrappedName(rest[: -len(suffix)], estimator)
    return WrappedName(rest)


def wrapped_name(base: str, estimator: str = REFERENCE_ESTIMATOR) -> str:
    """The arm name of ``base`` wrapped with ``estimator`` (the inverse of :func:`parse_wrapped`)."""
    return f"{WRAPPED_PREFIX}{base}" + ("" if estimator == REFERENCE_ESTIMATOR else f"-{estimator}")


def estimator_arms(arms: Sequence[str], base: str) -> dict[str, str]:
    """``arm → estimator`` for the ``hessian-<base>-<estimator>`` arms among ``arms`` (not the
    reference ``hessian-<base>`` itself)."""
    found = {}
    for arm in arms:
        parsed = parse_wrapped(arm)
        if parsed is not None and parsed.base == base and arm != wrapped_name(base):
            found[arm] = parsed.estimator
    return found


def normalises(base: str) -> bool | None:
    """Whether ``base`` normalises per coordinate (see :data:`NORMALISES`); None when unknown."""
    return NORMALISES.get(base)
