"""Teacher–student regression: mean squared error onto a fixed random ReLU network.

A loss that is not cross-entropy, so the curvature estimators and the exact diagonal are tried
beyond it. The generating process is known exactly (the classic teacher–student setting, e.g.
Saad & Solla 1995, https://doi.org/10.1103/PhysRevE.52.4225; Goldt et al. 2019,
https://arxiv.org/abs/1906.08632):

* inputs ``x ~ N(0, I_16)``;
* teacher: a ReLU MLP 16 → 32 → 32 → 4 with He-scaled Gaussian weights (fixed seed), so its
  outputs have variance of order 1;
* targets ``y = teacher(x) + σ ε`` with ``ε ~ N(0, I)`` and ``σ = 0.1``;
* student: a wider ReLU MLP 16 → 64 → 64 → 4 (it can represent the teacher), loss
  ``mse_loss`` (mean over rows and outputs).

Reference: the Bayes risk. No predictor has an expected test MSE below ``σ² = 0.01``, and the
teacher attains it; the check is the teacher's own test MSE, ``σ²·χ²_{nK}/(nK)`` in distribution,
within 4 standard errors (``σ²·√(2/(nK))``) of ``σ²``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hessian_lr.workloads.base import Reference
from hessian_lr.workloads.data import Splits
from hessian_lr.workloads.mlp import mlp

__all__ = ["INPUTS", "OUTPUTS", "NOISE_STD", "REFERENCE", "teacher", "teacher_splits", "build_student", "bayes_risk", "mse"]

INPUTS, HIDDEN_TEACHER, HIDDEN_STUDENT, OUTPUTS = 16, 32, 64, 4
NOISE_STD = 0.1
TEACHER_SEED, DATA_SEED = 1995, 2019
TRAIN_ROWS, VAL_ROWS, TEST_ROWS = 4000, 1000, 1000


def teacher() -> nn.Sequential:
    """The fixed teacher (float32, parameters frozen): He-normal hidden layers, ``N(0, 1/fan_in)``
    output layer, zero biases, drawn from its own generator (the global RNG is untouched)."""
    net = mlp((INPUTS, HIDDEN_TEACHER, HIDDEN_TEACHER, OUTPUTS))
    g = torch.Generator().manual_seed(TEACHER_SEED)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, layer in enumerate(linears):
            gain = 2.0 if i < len(linears) - 1 else 1.0
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * math.sqrt(gain / layer.in_features))
            layer.bias.zero_()
    return net.requires_grad_(False)


def teacher_splits() -> Splits:
    """Train / validation / test rows drawn from the generating process (fixed seed; ~5 ms)."""
    g = torch.Generator().manual_seed(DATA_SEED)
    net = teacher()
    rows = TRAIN_ROWS + VAL_ROWS + TEST_ROWS
    x = torch.randn(rows, INPUTS, generator=g)
    with torch.no_grad():
        y = net(x) + NOISE_STD * torch.randn(rows, OUTPUTS, generator=g)
    xs = x.split([TRAIN_ROWS, VAL_ROWS, TEST_ROWS])
    ys = y.split([TRAIN_ROWS, VAL_ROWS, TEST_ROWS])
    return Splits(*(t.contiguous() for pair in zip(xs, ys) for t in pair))


def build_student() -> nn.Sequential:
    """The student ReLU MLP 16 → 64 → 64 → 4 (PyTorch's default initialisation, global RNG)."""
    return mlp((INPUTS, HIDDEN_STUDENT, HIDDEN_STUDENT, OUTPUTS))


def bayes_risk() -> float:
    """``σ²``: the smallest expected MSE (per output) any predictor can reach."""
    return NOISE_STD**2


def mse(outputs: Tensor, targets: Tensor) -> Tensor:
    """The workload loss (``mse_loss``: mean over rows and outputs)."""
    return nn.functional.mse_loss(outputs, targets)


REFERENCE = Reference(
    metric="test_loss",
    value=NOISE_STD**2,
    tolerance=4 * NOISE_STD**2 * math.sqrt(2 / (TEST_ROWS * OUTPUTS)),
    source="the generating process: Bayes risk σ² = 0.01 of y = teacher(x) + σε (no predictor does better in "
    "expectation; the mean predictor scores ~0.62)",
    check="tests/workloads/test_teacher.py::test_the_teacher_attains_the_bayes_risk: the teacher's test MSE lies "
    "within 4 standard errors of σ²",
)
