"""The torch arms (``adam``, ``adamw``, ``sgd``).

Every built-in arm is tuned by default on its learning rate only (log-uniform in [1e-4, 1e-1],
the seed write-up's protocol); every other hyperparameter keeps the default listed in its
``defaults`` (the report prints them). ``hessian-adam``, ``hessian-sgd-secant``, ... are these
arms wrapped by name (:mod:`hessian_lr.arms.wrapping`), like every other arm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from hessian_lr.arms.base import Arm, signature_defaults
from hessian_lr.arms.names import normalises

__all__ = ["BUILTIN_ARMS", "torch_arm", "IMPLEMENTATION_ARGS"]

Factory = Callable[..., Optimizer]

# Arguments that choose an implementation, not a hyperparameter: never part of a space.
IMPLEMENTATION_ARGS = frozenset({"foreach", "fused", "capturable", "differentiable", "maximize"})


def _hyperparameter_defaults(fn: Callable[..., Any], **overrides: Any) -> dict[str, Any]:
    defaults = {k: v for k, v in signature_defaults(fn).items() if k not in IMPLEMENTATION_ARGS}
    return {**defaults, **overrides}


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
               source="torch.optim", requires=("torch",), normalises=normalises(name))


BUILTIN_ARMS: list[Arm] = [
    torch_arm("adam", "Adam (fused), default betas/eps", _adam, _hyperparameter_defaults(torch.optim.Adam)),
    torch_arm("sgd", "SGD, momentum 0.9", _sgd, _hyperparameter_defaults(torch.optim.SGD, momentum=0.9)),
    torch_arm("adamw", "AdamW (fused), default betas/eps, weight_decay 0.01", _adamw,
              _hyperparameter_defaults(torch.optim.AdamW)),
]
