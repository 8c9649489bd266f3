"""The torch arms (``adam``, ``adamw``, ``sgd``) and HessianLRAdaptation around them.

Every built-in arm is tuned by default on its learning rate only (log-uniform in [1e-4, 1e-1],
the seed write-up's protocol); every other hyperparameter keeps the default listed in its
``defaults`` (the report prints them). The wrapped arms take the wrapper's two
hyperparameters under namespaced names, ``curvature_beta`` and ``curvature_eps`` (the wrapper's
``beta`` and ``eps``), so that a space can tune them beside the base optimizer's ``betas`` and
``eps``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from hessian_lr.arms.base import PLAIN, Arm, EstimatorStep, TrainStep, signature_defaults
from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim.estimators import ESTIMATORS

__all__ = ["BUILTIN_ARMS", "hessian", "torch_arm", "wrapper_defaults", "CURVATURE_KEYS"]

Factory = Callable[..., Optimizer]

# Arguments that choose an implementation, not a hyperparameter: never part of a space.
IMPLEMENTATION_ARGS = frozenset({"foreach", "fused", "capturable", "differentiable", "maximize"})
CURVATURE_KEYS = {"curvature_beta": "beta", "curvature_eps": "eps"}


def _hyperparameter_defaults(fn: Callable[..., Any], **overrides: Any) -> dict[str, Any]:
    defaults = {k: v for k, v in signature_defaults(fn).items() if k not in IMPLEMENTATION_ARGS}
    return {**defaults, **overrides}


def wrapper_defaults() -> dict[str, Any]:
    """``curvature_beta`` / ``curvature_eps``: HessianLRAdaptation's ``beta`` / ``eps`` defaults."""
    wrapper = signature_defaults(HessianLRAdaptation)
    return {name: wrapper[arg] for name, arg in CURVATURE_KEYS.items()}


def _fused_where_supported(params: list[Tensor]) -> bool | None:
    """torch's fused Adam kernel (same math as foreach, ~30% faster per step here) where torch
    supports it for these tensors; None lets torch choose otherwise."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None


def _adam(params: Iterable[Tensor], **hyperparameters: Any) -> Optimizer:
    params = list(params)
    return torch.optim.Adam(params, fused=_fused_where_supported(params), **hyperparameters)


def _adamw(params: Iterable[Tensor], **hyperparameters: Any) -> Optimizer:
    params = list(params)
    return torch.optim.AdamW(params, fused=_fused_where_supported(params), **hyperparameters)


def _sgd(params: Iterable[Tensor], **hyperparameters: Any) -> Optimizer:
    return torch.optim.SGD(params, **{"momentum": 0.9, **hyperparameters})


def torch_arm(name: str, description: str, factory: Factory, defaults: Mapping[str, Any]) -> Arm:
    return Arm(name, factory, description=f"torch.optim.{description}", defaults=dict(defaults),
               source="torch.optim", requires=("torch",))


# Constructor options of the estimators used as arms (everything else: the class defaults), and
# the step cost of a wrapped optimizer relative to its base (an extra backward for the sampling
# ones), used only to schedule slow arms first.
ESTIMATOR_OPTIONS: dict[str, dict[str, Any]] = {"hutchinson": {"update_every": 1, "n_samples": 1},
                                                "gauss-newton": {"update_every": 1}}
ESTIMATOR_COST = {"hutchinson": 2.5, "gauss-newton": 1.8}


def hessian(base: Factory, estimator: str = "grad-diff") -> Factory:
    """``build(params, curvature_beta=..., curvature_eps=..., **base_hp)`` ->
    ``HessianLRAdaptation(base(params, **base_hp), beta=curvature_beta, eps=curvature_eps,
    estimator=<a fresh estimator>)``.

    For the estimators in the units of diag(H) (secant, secant-rms, hutchinson, gauss-newton) the
    scale is ``g / sqrt(c**2 + eps)``, so ``sqrt(eps) = 1e-4`` acts as a curvature floor — about the
    median of the mnist1d MLP's exact diagonal. It matters for an SGD base: with eps=1e-12,
    SGD+hutchinson/gauss-newton diverged at every lr in [1e-4, 1] here (a near-zero curvature turns
    gradient noise into a huge Newton step).
    """
    options = ESTIMATOR_OPTIONS.get(estimator, {})

    def build(params: Iterable[Tensor], **hyperparameters: Any) -> Optimizer:
        wrapper = {arg: hyperparameters.pop(name) for name, arg in CURVATURE_KEYS.items() if name in hyperparameters}
        return HessianLRAdaptation(base(params, **hyperparameters), estimator=ESTIMATORS[estimator](**options),
                                   **wrapper)

    build.__name__ = f"hessian_{base.__name__.strip('_')}_{estimator.replace('-', '_')}"
    build.__qualname__ = build.__name__
    return build


def _estimator_step(estimator: str) -> TrainStep:
    return EstimatorStep() if ESTIMATORS[estimator].backward is not ESTIMATORS["grad-diff"].backward else PLAIN


def _with_estimators(name: str, description: str, base: Factory, defaults: Mapping[str, Any],
                     estimators: Iterable[str]) -> list[Arm]:
    """``name`` itself, then ``hessian-<name>`` (grad-diff) and ``hessian-<name>-<estimator>``."""
    arms = [torch_arm(name, description, base, defaults)]
    wrapped_defaults = {**defaults, **wrapper_defaults()}
    for estimator in estimators:
        options = "".join(f", {k}={v}" for k, v in ESTIMATOR_OPTIONS.get(estimator, {}).items())
        suffix = "" if estimator == "grad-diff" else f"-{estimator}"
        arms.append(Arm(
            f"hessian-{name}{suffix}", hessian(base, estimator),
            description=f"HessianLRAdaptation({description}), {estimator} estimator{options}, "
                        f"curvature_beta={wrapped_defaults['curvature_beta']}, "
                        f"curvature_eps={wrapped_defaults['curvature_eps']}",
            defaults=wrapped_defaults, step=_estimator_step(estimator), source="hessian_lr.optim",
            requires=("torch",), relative_cost=ESTIMATOR_COST.get(estimator, 1.2)))
    return arms


BUILTIN_ARMS: list[Arm] = [
    *_with_estimators("adam", "Adam (fused), default betas/eps", _adam, _hyperparameter_defaults(torch.optim.Adam),
                      ESTIMATORS),
    *_with_estimators("sgd", "SGD, momentum 0.9", _sgd, _hyperparameter_defaults(torch.optim.SGD, momentum=0.9),
                      ESTIMATORS),
    *_with_estimators("adamw", "AdamW (fused), default betas/eps, weight_decay 0.01", _adamw,
                      _hyperparameter_defaults(torch.optim.AdamW), ["grad-diff"]),
]
