"""Multinomial logistic regression on scikit-learn's bundled 8×8 digits: a convex problem whose
optimum is known to tolerance.

Data: ``sklearn.datasets.load_digits`` (1,797 images of 64 grey levels, 10 classes; the UCI
"Optical Recognition of Handwritten Digits" test set, bundled with scikit-learn, so no download:
https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html). A fixed
permutation gives 1,197 train / 300 validation / 300 test rows; features are standardised with the
training rows' mean and standard deviation (constant pixels keep scale 1).

Model: one linear layer 64 → 10, cross-entropy plus ``(l2/2)·‖θ‖²`` over weights and biases —
strictly convex, so the optimum is unique. Reference (:func:`lbfgs_optimum`): scipy's L-BFGS-B on the
full-batch training objective in float64 to a projected-gradient tolerance of 1e-10.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from hessian_lr.workloads.base import Reference
from hessian_lr.workloads.data import Splits, cache_dir, cached_arrays, features, labels, package_version

__all__ = ["L2", "load_digits_arrays", "digits_splits", "build_digits_model", "lbfgs_optimum"]

L2 = 1e-3
SPLIT_SEED = 1797
TRAIN_ROWS, VAL_ROWS = 1197, 300  # the remaining 300 are the test rows


def load_digits_arrays(cache: Path | None = None) -> dict[str, np.ndarray]:
    """``x`` (1797, 64) float64 and ``y`` (1797,) from ``sklearn.datasets.load_digits``, cached per
    scikit-learn release (importing scikit-learn costs ~0.8 s of every process start)."""

    def build() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits  # bundled with the package: never downloads

        bunch = load_digits()
        return {"x": np.asarray(bunch.data, dtype=np.float64), "y": np.asarray(bunch.target, dtype=np.int64)}

    return cached_arrays((cache or cache_dir()) / f"digits-sklearn-{package_version('scikit-learn')}.npz", build)


def digits_splits(cache: Path | None = None) -> Splits:
    """The fixed split, standardised with the training rows' statistics."""
    data = load_digits_arrays(cache)
    x, y = data["x"], data["y"]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    train, val, test = np.split(order, [TRAIN_ROWS, TRAIN_ROWS + VAL_ROWS])
    mean, std = x[train].mean(0), x[train].std(0)
    std = np.where(std > 0, std, 1.0)  # pixels that are always 0 in the training rows stay 0

    def standard(rows: np.ndarray) -> Tensor:
        return features((x[rows] - mean) / std)

    return Splits(standard(train), labels(y[train]), standard(val), labels(y[val]), standard(test), labels(y[test]))


def build_digits_model() -> nn.Sequential:
    """Linear 64 → 10 (PyTorch's default initialisation from the global RNG)."""
    return nn.Sequential(nn.Linear(64, 10))


def lbfgs_optimum(x: Tensor, y: Tensor, l2: float = L2, *, tol: float = 1e-10) -> dict[str, object]:
    """The minimiser of ``mean CE(x W ᵀ + b, y) + (l2/2)(‖W‖² + ‖b‖²)`` by scipy's L-BFGS-B.

    Computed independently of torch's training code (numpy objective and gradient, float64).

    Args:
        x: features ``[N, 64]``; y: labels ``[N]``.
        l2: the penalty coefficient.
        tol: L-BFGS-B's ``gtol`` (max-norm of the projected gradient); ``ftol`` is 1e-15.

    Returns:
        ``{"weight": Tensor[10, 64], "bias": Tensor[10], "objective": float, "grad_norm": float,
        "iterations": int}`` (float64 tensors).
    """
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    xs = x.detach().to(torch.float64).numpy()
    ys = y.detach().numpy()
    n, f = xs.shape
    c = int(ys.max()) + 1
    onehot = np.eye(c)[ys]

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = flat[: c * f].reshape(c, f), flat[c * f :]
        logp = log_softmax(xs @ w.T + b, axis=1)
        value = -(onehot * logp).sum() / n + 0.5 * l2 * (flat @ flat)
        residual = (np.exp(logp) - onehot) / n  # d(mean CE)/d logits
        grad = np.concatenate([(residual.T @ xs).ravel(), residual.sum(0)]) + l2 * flat
        return value, grad

    result = minimize(fun, np.zeros(c * f + c), jac=True, method="L-BFGS-B",
                      options={"gtol": tol, "ftol": 1e-15, "maxiter": 10_000, "maxcor": 20})
    value, grad = fun(result.x)
    return {
        "weight": torch.from_numpy(result.x[: c * f].reshape(c, f).copy()),
        "bias": torch.from_numpy(result.x[c * f :].copy()),
        "objective": float(value),
        "grad_norm": float(np.linalg.norm(grad)),
        "iterations": int(result.nit),
    }


# scipy L-BFGS-B on the full training objective (float64, gradient norm 4e-9 after 79 iterations);
# at that optimum: validation loss 0.1585, test loss 0.1254, train / val / test accuracy
# 0.997 / 0.957 / 0.957.
OPTIMUM_OBJECTIVE = 0.0771284977

REFERENCE = Reference(
    metric="train_objective",
    value=OPTIMUM_OBJECTIVE,
    tolerance=1e-3,
    source="scipy.optimize.minimize(method='L-BFGS-B', gtol=1e-10) on the full-batch training objective in float64 "
    "(independent numpy objective and gradient; lbfgs_optimum)",
    check="tests/workloads/test_digits.py: L-BFGS reproduces the value to 1e-8 with gradient norm < 1e-6, and long "
    "full-batch training of the workload's own model and objective ends within the tolerance of it",
)
