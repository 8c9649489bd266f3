"""hessian-lr: curvature-adaptive learning rates for PyTorch, and the experiments that test them."""

from hessian_lr.optim import HessianLRAdaptation

__version__ = "0.1.0"
__all__ = ["HessianLRAdaptation", "__version__"]
