"""Comparison arms: a name maps to a factory ``(params, lr) -> optimizer`` (one registry).

Every arm is tuned on its learning rate only; every other hyperparameter keeps the default of
the class that implements it (the arm's ``description`` says which, and the report prints it).

Arms from the ``pytorch-optimizer`` package (the ``baselines`` extra) import it lazily, so the
core works without it; naming such an arm without the package is a one-line error.

Second-order arms (AdaHessian, SophiaH) compute a Hutchinson Hessian-vector product inside
``step()`` from ``p.grad``, so the backward before a Hessian refresh must keep its graph
(``create_graph=True``). ``hessian_every`` says how often that is: every step for AdaHessian,
every 10th step (the package default ``update_period``) for SophiaH — the training loop builds
the graph only on those steps and frees it after the step.

ApolloDQN keeps its default warm-up: lr rises linearly from 1e-5 over its first 500 steps (at
batch 100 on mnist1d, 14 of the default 20 epochs). We keep the package default, as for every
other baseline, rather than retune it; its early losses in the report reflect this.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.optim import Optimizer

from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim.estimators import ESTIMATORS

Factory = Callable[[Iterable[Tensor], float], Optimizer]

__all__ = ["Arm", "ARMS", "UpdateRule", "update_rule_of", "get_arm", "parse_arm_names", "BASELINES_PACKAGE"]

BASELINES_PACKAGE = "pytorch_optimizer"

_WRAPPER_DEFAULTS = {name: p.default for name, p in inspect.signature(HessianLRAdaptation).parameters.items()}


@dataclass(frozen=True)
class UpdateRule:
    """An arm's update in closed form, for engines that reproduce it without the optimizer object
    (``training/batched.py`` trains many models on stacked ``[K, P]`` state).

    ``base`` is ``"adam"`` (torch Adam/AdamW: ``weight_decay`` is coupled L2 unless ``decoupled``)
    or ``"sgd"`` (``momentum``, ``dampening``, ``nesterov``, coupled ``weight_decay``). ``hessian``
    puts HessianLRAdaptation's grad-diff preconditioning (``curvature_beta``, ``curvature_eps``) in
    front. Defaults are torch's and the wrapper's; :func:`update_rule_of` reads a rule off a built
    optimizer, and the tests check every declared rule against it.
    """

    base: str
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    hessian: bool = False
    curvature_beta: float = _WRAPPER_DEFAULTS["beta"]
    curvature_eps: float = _WRAPPER_DEFAULTS["eps"]

    def preconditioned(self) -> UpdateRule:
        """The same base inside ``HessianLRAdaptation`` with the grad-diff estimator and its defaults."""
        return replace(self, hessian=True)


def _base_rule(opt: Optimizer, **hessian: object) -> UpdateRule | None:
    if len(opt.param_groups) != 1:
        return None
    g = opt.param_groups[0]
    if g.get("maximize", False) or g.get("differentiable", False) or isinstance(g["lr"], Tensor):
        return None
    if type(opt) in (torch.optim.Adam, torch.optim.AdamW):
        if g.get("amsgrad", False):
            return None
        decoupled = type(opt) is torch.optim.AdamW or bool(g.get("decoupled_weight_decay", False))
        return UpdateRule("adam", betas=tuple(float(b) for b in g["betas"]), eps=float(g["eps"]),
                          weight_decay=float(g["weight_decay"]), decoupled=decoupled, **hessian)
    if type(opt) is torch.optim.SGD:
        return UpdateRule("sgd", weight_decay=float(g["weight_decay"]), momentum=float(g["momentum"]),
                          dampening=float(g["dampening"]), nesterov=bool(g["nesterov"]), **hessian)
    return None


def update_rule_of(optimizer: Optimizer) -> UpdateRule | None:
    """The :class:`UpdateRule` ``optimizer`` implements, or None when it is none of them (another
    class, amsgrad, several param groups, a tensor lr, another curvature estimator,
    ``nonfinite="skip"``, a wider curvature state dtype, ...)."""
    if not isinstance(optimizer, HessianLRAdaptation):
        return _base_rule(optimizer)
    if getattr(optimizer.estimator, "name", None) != "grad-diff" or optimizer.nonfinite != "error":
        return None
    if getattr(optimizer, "state_dtype", None) not in (None, torch.float32):
        return None
    group = optimizer.param_groups[0]
    return _base_rule(optimizer.base_optimizer, hessian=True, curvature_beta=float(group["curvature_beta"]),
                      curvature_eps=float(group["curvature_eps"]))


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    build: Callable[[Iterable[Tensor], float], Optimizer]
    # 0: first-order. n > 0: the backward of every n-th step (steps 0, n, 2n, ...) must keep its
    # graph (create_graph=True) because the optimizer takes a Hessian-vector product in step().
    hessian_every: int = 0
    # Python package the factory imports (None: torch only).
    requires: str | None = None
    # Training-step time relative to Adam (measured on mnist1d-mlp); only used to schedule the
    # slowest arms first when arms run in parallel processes.
    relative_cost: float = 1.0
    # The update in closed form, when it is one of UpdateRule's; None: unknown (batched training
    # then reads it off a built optimizer, which costs torch's ~1 s dynamo import once per process).
    update_rule: UpdateRule | None = None

    @property
    def second_order(self) -> bool:
        return self.hessian_every > 0

    def needs_graph(self, step: int) -> bool:
        """Whether the backward of optimizer step ``step`` (0-based) must use create_graph=True."""
        return self.hessian_every > 0 and step % self.hessian_every == 0

    @property
    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


ARMS: dict[str, Arm] = {}


def register(arm: Arm) -> Arm:
    ARMS[arm.name] = arm
    return arm


def _fused_ok(params: list[Tensor]) -> bool | None:
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None


def adam(params: Iterable[Tensor], lr: float) -> Optimizer:
    """torch Adam with default betas/eps; the fused kernel (same math, ~30% faster per step on
    this workload) where torch supports it for these tensors."""
    params = list(params)
    return torch.optim.Adam(params, lr=lr, fused=_fused_ok(params))


def adamw(params: Iterable[Tensor], lr: float) -> Optimizer:
    """torch AdamW with its defaults (weight_decay=0.01, decoupled), fused where supported."""
    params = list(params)
    return torch.optim.AdamW(params, lr=lr, fused=_fused_ok(params))


def sgd(params: Iterable[Tensor], lr: float) -> Optimizer:
    """torch SGD with heavy-ball momentum 0.9 (no Nesterov, no weight decay)."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


# Constructor options of the estimators used as arms (everything else: the class defaults).
ESTIMATOR_OPTIONS: dict[str, dict[str, object]] = {
    "hutchinson": {"update_every": 1, "n_samples": 1},
    "gauss-newton": {"update_every": 1},
}


# Step cost of a wrapped optimizer relative to its base: one extra elementwise pass for the
# gradient-only estimators, an extra (double) backward for the sampling ones.
ESTIMATOR_COST = {"hutchinson": 2.5, "gauss-newton": 1.8}


def hessian(base: Factory, estimator: str = "grad-diff") -> Factory:
    """``(params, lr) -> HessianLRAdaptation(base(params, lr), estimator=...)``, wrapper defaults
    (beta 0.99, eps 1e-8) and a fresh estimator per build.

    For the estimators in the units of diag(H) (secant, secant-rms, hutchinson, gauss-newton) the
    scale is ``g / sqrt(c**2 + eps)``, so ``sqrt(eps) = 1e-4`` acts as a curvature floor — about the
    median of the mnist1d MLP's exact diagonal. It matters for an SGD base: with eps=1e-12,
    SGD+hutchinson/gauss-newton diverged at every lr in [1e-4, 1] here (a near-zero curvature turns
    gradient noise into a huge Newton step).
    """
    options = ESTIMATOR_OPTIONS.get(estimator, {})

    def build(params: Iterable[Tensor], lr: float) -> Optimizer:
        return HessianLRAdaptation(base(params, lr), estimator=ESTIMATORS[estimator](**options))

    build.__name__ = f"hessian_{getattr(base, '__name__', 'base')}_{estimator.replace('-', '_')}"
    return build


def _register_with_estimators(name: str, description: str, base: Factory, estimators: Iterable[str],
                              rule: UpdateRule) -> None:
    """``name`` itself, then ``hessian-<name>`` (grad-diff) and ``hessian-<name>-<estimator>``."""
    register(Arm(name, f"torch.optim.{description}", base, update_rule=rule))
    for estimator in estimators:
        options = "".join(f", {k}={v}" for k, v in ESTIMATOR_OPTIONS.get(estimator, {}).items())
        suffix = "" if estimator == "grad-diff" else f"-{estimator}"
        register(Arm(f"hessian-{name}{suffix}", f"HessianLRAdaptation({description}), {estimator} estimator{options}, "
                     "beta=0.99, eps=1e-8", hessian(base, estimator),
                     relative_cost=ESTIMATOR_COST.get(estimator, 1.2),
                     update_rule=rule.preconditioned() if estimator == "grad-diff" else None))


_register_with_estimators("adam", "Adam (fused), default betas/eps", adam, ESTIMATORS, UpdateRule("adam"))
_register_with_estimators("sgd", "SGD, momentum 0.9", sgd, ESTIMATORS, UpdateRule("sgd", momentum=0.9))
_register_with_estimators("adamw", "AdamW (fused), default betas/eps, weight_decay 0.01", adamw, ["grad-diff"],
                          UpdateRule("adam", weight_decay=0.01, decoupled=True))


def _baseline(class_name: str, **kwargs: object) -> Callable[[Iterable[Tensor], float], Optimizer]:
    def build(params: Iterable[Tensor], lr: float) -> Optimizer:
        try:
            import pytorch_optimizer
        except ImportError:
            raise ValueError(f"{class_name} needs the pytorch-optimizer package: "
                             "pip install 'hessian-lr[baselines]'") from None
        return getattr(pytorch_optimizer, class_name)(params, lr=lr, **kwargs)

    build.__name__ = class_name
    return build


_PO = "pytorch_optimizer"
register(Arm("adabelief", "pytorch_optimizer.AdaBelief, package defaults", _baseline("AdaBelief"), requires=_PO))
register(Arm("adahessian", "pytorch_optimizer.AdaHessian, package defaults (Hutchinson Hessian every step, "
             "1 Rademacher probe)", _baseline("AdaHessian"), hessian_every=1, requires=_PO, relative_cost=2.4))
register(Arm("sophiah", "pytorch_optimizer.SophiaH, package defaults (Hutchinson Hessian every 10 steps, "
             "1 Gaussian probe, clip p=0.01)", _baseline("SophiaH"), hessian_every=10, requires=_PO))
register(Arm("apollo", "pytorch_optimizer.ApolloDQN, package defaults (lr warm-up from 1e-5 over 500 steps)",
             _baseline("ApolloDQN"), requires=_PO, relative_cost=1.35))
register(Arm("diffgrad", "pytorch_optimizer.DiffGrad, package defaults", _baseline("DiffGrad"), requires=_PO))
register(Arm("adan", "pytorch_optimizer.Adan, package defaults", _baseline("Adan"), requires=_PO))


def get_arm(name: str) -> Arm:
    try:
        return ARMS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(ARMS)}") from None


def parse_arm_names(names: str | Iterable[str]) -> tuple[str, ...]:
    """``"adam,hessian-adam"`` or a list -> validated, de-duplicated names in order.

    An arm whose package is missing is refused here, before any training starts."""
    items = names.split(",") if isinstance(names, str) else list(names)
    cleaned = tuple(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not cleaned:
        raise ValueError("optimizers must name at least one optimizer")
    for name in cleaned:
        arm = get_arm(name)
        if not arm.available:
            raise ValueError(f"optimizer {name!r} needs the {arm.requires.replace('_', '-')} package: "
                             "pip install 'hessian-lr[baselines]'")
    return cleaned
