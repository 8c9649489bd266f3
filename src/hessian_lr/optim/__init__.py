"""The optimizer core: torch only, no experiment code (no Optuna, no matplotlib)."""

from hessian_lr.optim.estimators import ESTIMATORS, CurvatureEstimator, GradDiff, get_estimator
from hessian_lr.optim.wrapper import HessianLRAdaptation

__all__ = ["HessianLRAdaptation", "CurvatureEstimator", "GradDiff", "ESTIMATORS", "get_estimator"]
