"""Optimizer factories ``(params, lr) -> optimizer`` for every curvature estimator, ready to be
registered as ``compare`` arms (this module registers nothing itself; ``hessian_lr.arms`` owns
the registry). Torch only: it imports nothing from the experiment side, so ``arms.py`` can import
it without a cycle.

The base optimizers are passed in (``arms.adam``, ``arms.sgd``) so the arms share one definition
of each base. Every arm keeps the wrapper's default ``eps=1e-8``. For the estimators in the
units of diag(H) (``secant``, ``secant-rms``, ``hutchinson``, ``gauss-newton``) the gradient
scale is ``g / sqrt(c² + eps)``, so ``sqrt(eps) = 1e-4`` acts as a curvature floor — about the
median of the mnist1d MLP's exact diagonal (~2e-4). It matters for an SGD base: measured here
(20 epochs, validation loss), SGD+hutchinson/gauss-newton diverged at every lr in [1e-4, 1] with
eps=1e-12 (floor 1e-6: a near-zero curvature turns gradient noise into a huge Newton step) and
trained with eps=1e-8 (best ~1.24–1.44 at lr 1e-4) or eps=1e-6 (~1.2).

Training-step protocol: every ``HessianLRAdaptation`` arm may call
``optimizer.backward(loss, logits=logits)`` instead of ``loss.backward()``; for ``hutchinson`` and
``gauss-newton`` it is required (their ``step()`` raises otherwise), for the others it is exactly
``loss.backward()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim.estimators import ESTIMATORS, get_estimator

__all__ = ["ESTIMATOR_EPS", "hessian_factory", "estimator_arm_specs"]

Factory = Callable[[Iterable[Tensor], float], Optimizer]

ESTIMATOR_EPS = {name: 1e-8 for name in ESTIMATORS}  # one value for all; see the module docstring

# Constructor options per estimator for the arms (everything else: the class defaults).
ESTIMATOR_OPTIONS: dict[str, dict[str, Any]] = {
    "hutchinson": {"update_every": 1, "n_samples": 1},
    "gauss-newton": {"update_every": 1},
}


def hessian_factory(base: Factory, estimator: str, *, beta: float = 0.99, eps: float | None = None) -> Factory:
    """``(params, lr) -> HessianLRAdaptation(base(params, lr), estimator=...)`` with a fresh estimator per build."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose from {', '.join(ESTIMATORS)}")
    eps = ESTIMATOR_EPS[estimator] if eps is None else eps
    options = ESTIMATOR_OPTIONS.get(estimator, {})

    def build(params: Iterable[Tensor], lr: float) -> Optimizer:
        est = ESTIMATORS[estimator](**options) if options else get_estimator(estimator)
        return HessianLRAdaptation(base(params, lr), beta=beta, eps=eps, estimator=est)

    build.__name__ = f"hessian_{getattr(base, '__name__', 'base')}_{estimator.replace('-', '_')}"
    return build


def estimator_arm_specs(bases: dict[str, tuple[Factory, str]], *, skip_existing: Iterable[str] = ()) -> list[dict]:
    """One ``{"name", "description", "build"}`` per (base, estimator), for ``Arm(**spec)``.

    ``bases`` maps a short base name to ``(factory, description)``, e.g.
    ``{"adam": (arms.adam, "Adam (fused)"), "sgd": (arms.sgd, "SGD momentum 0.9")}``. Names are
    ``hessian-<base>-<estimator>``; grad-diff, the default estimator, is named ``hessian-<base>``
    (pass those in ``skip_existing`` when already registered).
    """
    skip = set(skip_existing)
    specs = []
    for base_name, (factory, base_description) in bases.items():
        for estimator in ESTIMATORS:
            name = f"hessian-{base_name}" if estimator == "grad-diff" else f"hessian-{base_name}-{estimator}"
            if name in skip:
                continue
            options = ESTIMATOR_OPTIONS.get(estimator, {})
            extra = "".join(f", {k}={v}" for k, v in options.items())
            specs.append({
                "name": name,
                "description": (f"HessianLRAdaptation({base_description}), {estimator} estimator{extra}, "
                                f"beta=0.99, eps={ESTIMATOR_EPS[estimator]:g}"),
                "build": hessian_factory(factory, estimator),
            })
    return specs
