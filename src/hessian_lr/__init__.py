"""hessian-lr: curvature-adaptive learning rates for PyTorch, and the experiments that test them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hessian_lr.optim import HessianLRAdaptation
    from hessian_lr.results import Results

__version__ = "0.1.0"
__all__ = ["HessianLRAdaptation", "compare", "__version__"]


def compare(**options: Any) -> Results:
    """Run a comparison from Python (a notebook, a script) and return its results.

    Takes the options of ``hessian-lr compare`` as keyword arguments (``optimizers``,
    ``workload``, ``trials``, ``seeds``, ``space``, ``spaces``, ``out``, ...; see
    :class:`hessian_lr.config.CompareConfig`); ``optimizers`` may name registered arms, import
    paths, or :class:`hessian_lr.arms.Arm` objects / optimizer factories registered beforehand
    with :func:`hessian_lr.arms.register`. Writes the run folder exactly as the CLI does.

    Example::

        import hessian_lr
        results = hessian_lr.compare(optimizers=["adam", "my_pkg.opt:MyOptimizer"], out="runs/mine")
        print(results.optimizers["adam"].summary["val_loss_mean"])
    """
    from hessian_lr.config import CompareConfig
    from hessian_lr.pipeline import run_compare

    return run_compare(CompareConfig(**options))


def __getattr__(name: str) -> Any:
    # Resolved on first use rather than at import, so that the CLI decides how the interpreter
    # treats torch's import (see hessian_lr.cli.main) before torch loads.
    if name == "HessianLRAdaptation":
        from hessian_lr.optim import HessianLRAdaptation

        return HessianLRAdaptation
    raise AttributeError(f"module 'hessian_lr' has no attribute {name!r}")
