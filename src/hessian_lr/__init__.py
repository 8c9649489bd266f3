"""hessian-lr: curvature-adaptive learning rates for PyTorch, and the experiments that test them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hessian_lr.optim import HessianLRAdaptation

__version__ = "0.1.0"
__all__ = ["HessianLRAdaptation", "__version__"]


def __getattr__(name: str) -> Any:
    # Resolved on first use rather than at import, so that the CLI decides how the interpreter
    # treats torch's import (see hessian_lr.cli.main) before torch loads.
    if name == "HessianLRAdaptation":
        from hessian_lr.optim import HessianLRAdaptation

        return HessianLRAdaptation
    raise AttributeError(f"module 'hessian_lr' has no attribute {name!r}")
