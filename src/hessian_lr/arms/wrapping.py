"""Any arm wrapped in :class:`~hessian_lr.optim.HessianLRAdaptation`: by name
(``hessian-<arm>[-<estimator>]``, :mod:`hessian_lr.arms.names`) or by an ``[arms.NAME]`` table.

The wrapped arm is its base arm with the wrapper in front of the optimizer:

* ``build(params, curvature_beta=..., curvature_eps=..., **base_hp)`` builds the base optimizer
  with ``base_hp`` and wraps it (:func:`hessian`);
* its search space is the base's; its ``defaults`` are the base's plus the wrapper's two
  hyperparameters, ``curvature_beta`` and ``curvature_eps`` (the wrapper's ``beta`` and ``eps``,
  namespaced beside the base's own ``betas`` and ``eps``), so the ``wide`` preset tunes them;
* its training step is the base's (the wrapper forwards ``train()`` / ``eval()`` to a base that
  has them, e.g. Schedule-Free AdamW); a sampling estimator (``hutchinson``, ``gauss-newton``)
  replaces a plain backward by its own and keeps the base's ``train`` / ``eval``
  (:class:`~hessian_lr.arms.base.SampledStep`);
* cost, requirements, stacking and the ``normalises`` class come from the base; the description
  names the base and the estimator with its options.

Refused, with the reason in one line (:func:`refusal`): an arm that is already wrapped, a base
whose step differentiates ``p.grad`` (AdaHessian, SophiaH: the wrapper hands the base rescaled
copies of the gradients, which carry no graph), and a sampling estimator around a base step whose
backward is not a plain ``loss.backward()``.

An ``[arms.NAME]`` table in a TOML config declares a wrapped arm under a name of its own, with
any estimator options (:func:`check_table`, :func:`declared_arm`)::

    [arms.hutch10]
    base = "adam"             # any arm name or import path
    estimator = "hutchinson"  # default: grad-diff
    update_every = 10         # the estimator's constructor options
    n_samples = 2
"""

from __future__ import annotations

import re
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from hessian_lr.arms.base import Arm, EstimatorStep, GraphStep, PlainStep, SampledStep, TrainStep, Wrapping, \
    signature_defaults
from hessian_lr.arms.names import REFERENCE_ESTIMATOR, estimator_names, wrapped_name
from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim.estimators import ESTIMATORS, CurvatureEstimator

__all__ = ["wrap", "hessian", "refusal", "wrapper_defaults", "samples_in_backward", "check_table", "declared_arm",
           "estimator_options", "CURVATURE_KEYS", "ESTIMATOR_OPTIONS", "ESTIMATOR_COST", "TABLE_KEYS"]

Factory = Callable[..., Optimizer]

CURVATURE_KEYS = {"curvature_beta": "beta", "curvature_eps": "eps"}
# Constructor options of the estimators used as arms (everything else: the class defaults), and
# the step cost of a wrapped optimizer relative to its base (an extra backward for the sampling
# ones), used only to schedule slow arms first.
ESTIMATOR_OPTIONS: dict[str, dict[str, Any]] = {"hutchinson": {"update_every": 1, "n_samples": 1},
                                                "gauss-newton": {"update_every": 1}}
ESTIMATOR_COST = {"hutchinson": 2.5, "gauss-newton": 1.8}
TABLE_KEYS = ("base", "estimator")  # an [arms.NAME] table's own keys; the others are estimator options
_TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# Estimator constructor arguments that a TOML value cannot give.
_NOT_OPTIONS = frozenset({"generator"})


def wrapper_defaults() -> dict[str, Any]:
    """``curvature_beta`` / ``curvature_eps``: HessianLRAdaptation's ``beta`` / ``eps`` defaults."""
    wrapper = signature_defaults(HessianLRAdaptation)
    return {name: wrapper[arg] for name, arg in CURVATURE_KEYS.items()}


def samples_in_backward(estimator: str) -> bool:
    """Whether ``estimator`` takes its curvature sample in a backward of its own (needs
    ``optimizer.backward(loss, logits=...)``)."""
    return ESTIMATORS[estimator].backward is not CurvatureEstimator.backward


def hessian(base: Factory, estimator: str = REFERENCE_ESTIMATOR, options: Mapping[str, Any] | None = None) -> Factory:
    """``build(params, curvature_beta=..., curvature_eps=..., **base_hp)`` ->
    ``HessianLRAdaptation(base(params, **base_hp), beta=curvature_beta, eps=curvature_eps,
    estimator=<a fresh estimator>)``.

    Args:
        base: the base arm's ``build``.
        estimator: a registered estimator name.
        options: the estimator's constructor options (default: :data:`ESTIMATOR_OPTIONS`).

    For the estimators in the units of diag(H) (secant, secant-rms, hutchinson, gauss-newton) the
    scale is ``g / sqrt(c**2 + eps)``, so ``sqrt(eps) = 1e-4`` acts as a curvature floor — about the
    median of the mnist1d MLP's exact diagonal. It matters for an SGD base: with eps=1e-12,
    SGD+hutchinson/gauss-newton diverged at every lr in [1e-4, 1] here (a near-zero curvature turns
    gradient noise into a huge Newton step).
    """
    options = dict(ESTIMATOR_OPTIONS.get(estimator, {}) if options is None else options)

    def build(params: Iterable[Tensor], **hyperparameters: Any) -> Optimizer:
        wrapper = {arg: hyperparameters.pop(name) for name, arg in CURVATURE_KEYS.items() if name in hyperparameters}
        return HessianLRAdaptation(base(params, **hyperparameters), estimator=ESTIMATORS[estimator](**options),
                                   **wrapper)

    base_name = getattr(base, "__name__", type(base).__name__).strip("_")
    build.__name__ = build.__qualname__ = f"hessian_{base_name}_{estimator.replace('-', '_')}"
    return build


def refusal(base: Arm, estimator: str = REFERENCE_ESTIMATOR) -> str | None:
    """Why ``base`` cannot be wrapped with ``estimator`` (one line), or None when it can."""
    if base.wraps is not None or isinstance(base.step, EstimatorStep):
        return f"{base.name} is already wrapped in HessianLRAdaptation; an arm is wrapped once"
    if isinstance(base.step, GraphStep):
        return (f"{base.name}'s step differentiates p.grad (a Hessian-vector product), which the wrapper replaces "
                "by rescaled gradients without a graph; it cannot be wrapped")
    if samples_in_backward(estimator) and not base.step.plain:
        return (f"the {estimator} estimator takes its sample in a backward of its own, but {base.name}'s step has "
                f"its own backward ({base.step.describe()}); wrap it with a gradient-only estimator")
    return None


def _wrapped_step(base_step: TrainStep, estimator: str) -> TrainStep:
    """The base's step, or a sampling estimator's backward around it (see the module docstring)."""
    if not samples_in_backward(estimator):
        return base_step
    if type(base_step) is PlainStep:
        return EstimatorStep()
    return SampledStep(base_step)


def _inner_description(base: Arm) -> str:
    """The base's description without its module prefix (the source is recorded beside it):
    ``torch.optim.Adam (fused), ...`` -> ``Adam (fused), ...``."""
    text = base.description or base.name
    prefix = f"{base.source}."
    return text[len(prefix):] if text.startswith(prefix) else text


def wrap(base: Arm, estimator: str = REFERENCE_ESTIMATOR, options: Mapping[str, Any] | None = None, *,
         name: str | None = None) -> Arm:
    """``base`` wrapped in HessianLRAdaptation with ``estimator`` (see the module docstring).

    Args:
        base: the arm to wrap.
        estimator: a registered estimator name.
        options: the estimator's constructor options; None: :data:`ESTIMATOR_OPTIONS`. Given
            options are added to those.
        name: the wrapped arm's name (default: ``hessian-<base>[-<estimator>]``).

    Raises:
        ValueError: an unknown estimator, or a base that cannot be wrapped (:func:`refusal`).
    """
    name = name or wrapped_name(base.name, estimator)
    if estimator not in ESTIMATORS:
        raise ValueError(f"optimizer {name!r}: unknown estimator {estimator!r}; choose from "
                         f"{', '.join(estimator_names())}")
    reason = refusal(base, estimator)
    if reason is not None:
        raise ValueError(f"optimizer {name!r}: {reason}")
    options = {**ESTIMATOR_OPTIONS.get(estimator, {}), **(options or {})}
    curvature = wrapper_defaults()
    options_text = "".join(f", {k}={v}" for k, v in options.items())
    return Arm(
        name, hessian(base.build, estimator, options),
        description=f"HessianLRAdaptation({_inner_description(base)}), {estimator} estimator{options_text}, "
                    f"curvature_beta={curvature['curvature_beta']}, curvature_eps={curvature['curvature_eps']}",
        space=base.space, defaults=ChainMap(curvature, base.defaults), step=_wrapped_step(base.step, estimator),
        requires=tuple(dict.fromkeys((*base.requires, "torch"))), source="hessian_lr.optim",
        relative_cost=base.relative_cost * ESTIMATOR_COST.get(estimator, 1.2), stackable=base.stackable,
        normalises=base.normalises, wraps=Wrapping(base, estimator, options))


# -- [arms.NAME] tables ---------------------------------------------------------------------------

def estimator_options(estimator: str) -> dict[str, Any]:
    """The constructor options of ``estimator`` a table may set, with their defaults (the
    keyword arguments of its class and its bases, ``generator`` left out)."""
    options: dict[str, Any] = {}
    for cls in reversed(ESTIMATORS[estimator].__mro__):
        if "__init__" in vars(cls) and issubclass(cls, CurvatureEstimator):
            options.update(signature_defaults(cls.__init__))
    return {k: v for k, v in options.items() if k not in _NOT_OPTIONS}


def _check_option(where: str, key: str, value: Any, default: Any) -> None:
    """A TOML value of an estimator option has its default's type (an int for a float is fine)."""
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
    else:
        ok = isinstance(value, (bool, int, float, str))
    if not ok:
        kind = {bool: "true or false", int: "an integer", float: "a number"}.get(type(default), "a value")
        raise ValueError(f"{where}: {key} must be {kind} (default {default!r}), got {value!r}")


def check_table(name: str, table: Any) -> dict[str, Any]:
    """Validate one ``[arms.NAME]`` table and return it as plain data (``base``, ``estimator``,
    then the options given), without resolving the base.

    Raises:
        ValueError: naming ``arms.NAME`` and the offending key: a malformed name, a missing or
            non-string ``base``, an unknown estimator, an unknown option or a value the estimator
            refuses.
    """
    where = f"arms.{name}"
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise ValueError(f"{where}: an arm's name is letters, digits and _.+- (no ':' or ','), got {name!r}")
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table with base = \"<arm>\" and optionally estimator and its options, "
                         f"got {table!r}")
    base = table.get("base")
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"{where}: base must be an arm name or import path (a string), got {base!r}")
    estimator = table.get("estimator", REFERENCE_ESTIMATOR)
    if estimator not in ESTIMATORS:
        raise ValueError(f"{where}: estimator must be one of {', '.join(estimator_names())}, got {estimator!r}")
    allowed = estimator_options(estimator)
    options = {k: v for k, v in table.items() if k not in TABLE_KEYS}
    for key, value in options.items():
        if key not in allowed:
            hint = f"; hyperparameters such as {key} go in a [space.{name}] table" if key in CURVATURE_KEYS else ""
            raise ValueError(f"{where}: unknown key {key!r}; it takes base, estimator and the {estimator} "
                             f"estimator's options ({', '.join(allowed) or 'none'}){hint}")
        _check_option(where, key, value, allowed[key])
    try:
        ESTIMATORS[estimator](**{**ESTIMATOR_OPTIONS.get(estimator, {}), **options})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    return {"base": base.strip(), "estimator": estimator, **options}


def declared_arm(name: str, table: Mapping[str, Any], base: Arm) -> Arm:
    """The arm an ``[arms.NAME]`` table declares, around the already resolved ``base``."""
    checked = check_table(name, table)
    options = {k: v for k, v in checked.items() if k not in TABLE_KEYS}
    try:
        return wrap(base, checked["estimator"], options, name=name)
    except ValueError as exc:
        raise ValueError(f"arms.{name}: {exc}") from None
