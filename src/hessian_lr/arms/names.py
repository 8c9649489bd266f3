"""The grammar of arm names: ``<base>``, ``hessian-<base>`` and ``hessian-<base>-<estimator>``.

Every arm — built-in, from pytorch-optimizer, or an import path ``package.module:name`` — can be
wrapped in :class:`~hessian_lr.optim.HessianLRAdaptation` by name:

* ``hessian-<base>`` wraps ``<base>`` with the write-up's estimator (``grad-diff``);
* ``hessian-<base>-<estimator>`` with another one (``hessian-lion-gauss-newton``,
  ``hessian-my_pkg.mod:MyOpt-secant``).

The estimator suffix is matched against the registered estimator names, longest first (so
``-secant-rms`` is never read as ``-secant``), which keeps the grammar unambiguous for bases
whose names hold hyphens (``schedulefree-adamw``) or a ``:`` (import paths). A suffix that is
not an estimator stays part of the base's name (``hessian-adam-foo`` wraps an arm ``adam-foo``,
which the registry then reports as unknown, listing the estimators).

This module only parses and classifies names; :mod:`hessian_lr.arms.registry` resolves them and
:mod:`hessian_lr.arms.wrapping` builds the wrapped arms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["WRAPPED_PREFIX", "REFERENCE_ESTIMATOR", "NORMALISES", "WrappedName", "parse_wrapped", "wrapped_name",
           "estimator_arms", "estimator_names", "normalises"]

WRAPPED_PREFIX = "hessian-"
REFERENCE_ESTIMATOR = "grad-diff"  # the write-up's estimator: what ``hessian-<base>`` uses
# Whether a base optimizer normalises per coordinate: divides each coordinate's step by a running
# scale of its own, so that the step no longer follows the size of that coordinate's gradient.
# Such a base largely undoes the wrapper's rescaling (a positive per-coordinate factor that
# changes slowly cancels in its ratio); the suite asks whether wrapping helps bases that do not.
# Registered arms take their ``Arm.normalises`` from here; arms not listed are not classified.
NORMALISES: dict[str, bool] = {
    # Adam's family: m / sqrt(v) per coordinate (AdaBelief: v of g - m; Adan, DiffGrad, Prodigy,
    # Schedule-Free AdamW: Adam's second moment under their own first-moment or step-size rules).
    "adam": True, "adamw": True, "adabelief": True, "diffgrad": True, "adan": True, "prodigy": True,
    "schedulefree-adamw": True,
    # SOAP: Adam's rule per coordinate of Shampoo's eigenbasis.
    "soap": True,
    # Diagonal second-order methods: each coordinate divided by its own curvature estimate
    # (Hutchinson's for AdaHessian and SophiaH, a secant one for Apollo).
    "adahessian": True, "sophiah": True, "apollo": True,
    # Lion steps by lr * sign(momentum mix): every coordinate moves by exactly lr whatever its
    # gradient's scale, the extreme case of normalising. The wrapper's factor changes only how the
    # momentum weighs old against new gradients, never the step's size.
    "lion": True,
    # SGD (momentum 0.9): the step is the rescaled gradient itself.
    "sgd": False,
    # Whole-matrix preconditioners: Muon orthogonalises each weight matrix (its singular values,
    # not its coordinates, are normalised; its AdamW part holds only the 1-D tensors); Shampoo
    # and PSGD Kron multiply by Kronecker factors. A per-coordinate rescaling changes the matrix
    # they precondition and is not undone.
    "muon": False, "shampoo": False, "kron": False,
}


@dataclass(frozen=True)
class WrappedName:
    """A parsed ``hessian-<base>[-<estimator>]`` name."""

    base: str
    estimator: str = REFERENCE_ESTIMATOR


def estimator_names() -> tuple[str, ...]:
    """The registered estimators' names, in registration order (``grad-diff`` first)."""
    from hessian_lr.optim.estimators import ESTIMATORS

    return tuple(ESTIMATORS)


def _longest_first() -> list[str]:
    return sorted(estimator_names(), key=len, reverse=True)


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
    for estimator in _longest_first():
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
