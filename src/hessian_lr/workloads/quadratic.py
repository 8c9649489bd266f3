"""The noisy quadratic model and its rotated twin: curvature known in closed form.

The noisy quadratic model (NQM) of Zhang et al. 2019, "Which algorithmic choices matter at which
batch sizes? Insights from a noisy quadratic model" (NeurIPS, https://arxiv.org/abs/1907.04164):
a quadratic loss with a diagonal Hessian ``H = diag(h)`` and gradient noise of covariance
``H / B`` at batch size ``B``. Here it is framed as an ordinary data set so that every training
loop and estimator treats it like any other workload:

* parameters ``θ ∈ R^d`` (one tensor, ``θ_0 ~ N(0, I)`` from torch's global RNG, i.e. the seed);
* each data row is a noise vector ``ξ``, and the per-row loss is ``½ θᵀHθ + ξᵀθ``;
* the training rows are centred and whitened so that their empirical mean is exactly 0 and their
  empirical covariance (divisor ``N``) exactly ``H``; a minibatch of ``B`` rows therefore has the
  gradient ``Hθ + mean(ξ)``, with noise covariance ``H/B`` (times ``(N−B)/(N−1)`` when the rows
  are drawn without replacement, as epochs of a shuffled data set do);
* validation and test are one zero row each: their loss is the expected risk ``½ θᵀHθ`` exactly.

``rotated-quadratic`` uses ``H = Q diag(h) Qᵀ`` with a fixed random rotation ``Q`` (as DeepOBS's
``quadratic_deep``, Schneider et al. 2019, https://arxiv.org/abs/1903.05499): same spectrum, same
SGD dynamics, but ``diag(H)`` no longer describes the curvature — the contrast case for diagonal
preconditioners.

Reference (:func:`sgd_expected_loss`): SGD's expected loss in closed form. Per eigen-coordinate
``a = 1 − lr·h``. With rows drawn independently (the NQM proper; with replacement)
``E[θ²]_{t+1} = a² E[θ²]_t + lr² h / B``. For reshuffled epochs of the ``N`` fixed rows, two
distinct minibatch means of one epoch have covariance ``−h/(N−1)`` and one has ``h(N−B)/(B(N−1))``,
so after ``T`` steps ``E[θ²]_T = a^{2T} E[θ²]_0 + lr² h/(N−1) · Σ_epochs (N/B · Σ c_t² − (Σ c_t)²)``
with ``c_t = a^{T−1−t}`` summed over the epoch's steps ``t < T``. SGD is rotation-equivariant and
``θ_0`` is isotropic, so both workloads share this curve.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hessian_lr.workloads.base import Reference
from hessian_lr.workloads.data import Splits

__all__ = [
    "DIM",
    "ROWS",
    "BATCH_SIZE",
    "EPOCHS",
    "spectrum",
    "random_rotation",
    "QuadraticModel",
    "quadratic_splits",
    "mean_row_loss",
    "sgd_expected_loss",
    "REFERENCE",
    "REFERENCE_LR",
]

DIM = 100
SCALE = 10.0  # h_i = SCALE / i: SGD is stable below lr = 2 / SCALE = 0.2, inside the usual tuning range
ROWS = 1000
BATCH_SIZE = 10
EPOCHS = 10  # 1,000 steps
NOISE_SEED = 2019
ROTATION_SEED = 1903


def spectrum(dim: int = DIM, scale: float = SCALE) -> Tensor:
    """The Hessian's eigenvalues ``h_i = scale / i``, i = 1..dim (float64), as in Zhang et al. 2019."""
    return scale / torch.arange(1, dim + 1, dtype=torch.float64)


def random_rotation(dim: int = DIM, seed: int = ROTATION_SEED) -> Tensor:
    """A Haar-distributed orthogonal matrix (float64): QR of a Gaussian matrix with the signs of
    R's diagonal moved into Q (Mezzadri 2007, https://arxiv.org/abs/math-ph/0609050)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


class QuadraticModel(nn.Module):
    """``θ`` and the constant Hessian; ``forward(ξ)`` is the per-row loss ``½ θᵀHθ + ξᵀθ`` ``[N]``.

    ``H = Q diag(h) Qᵀ`` (``Q = I`` when ``rotation`` is None). The constants are plain attributes,
    not buffers (no state besides ``θ``), cast to ``θ``'s dtype on use so ``.double()`` works.

    Args:
        h: the eigenvalues (float64).
        rotation: ``Q`` (float64, orthogonal) or None for the diagonal NQM.
    """

    def __init__(self, h: Tensor, rotation: Tensor | None = None) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(h.numel()))
        self.h = h.detach().to(torch.float64)
        self.rotation = None if rotation is None else rotation.detach().to(torch.float64)

    def forward(self, x: Tensor) -> Tensor:
        theta = self.theta
        h = self.h.to(dtype=theta.dtype, device=theta.device)
        z = theta if self.rotation is None else theta @ self.rotation.to(dtype=theta.dtype, device=theta.device)
        return 0.5 * (h * z * z).sum() + x @ theta  # z = Qᵀθ: the eigen-coordinates

    def hessian(self) -> Tensor:
        """The full Hessian ``H`` of the per-row loss (and of any mean of rows), in ``θ``'s dtype."""
        h = self.h.to(self.theta.dtype)
        if self.rotation is None:
            return torch.diag(h)
        q = self.rotation.to(self.theta.dtype)
        return (q * h) @ q.T

    def hessian_diagonal(self) -> Tensor:
        """``diag(H)``: ``h`` itself, or ``Σ_j Q_ij² h_j`` when rotated."""
        h = self.h.to(self.theta.dtype)
        return h if self.rotation is None else self.rotation.to(h.dtype).square() @ h


def mean_row_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """The workload loss: the model already returns per-row losses; the targets are unused zeros."""
    return outputs.mean()


def quadratic_splits(rotated: bool, *, dim: int = DIM, rows: int = ROWS, seed: int = NOISE_SEED) -> Splits:
    """Training noise rows with empirical mean 0 and covariance exactly ``H``; one zero row each
    for validation and test (their loss is ``½ θᵀHθ``).

    ``ξ = √N · U · diag(√h) · Qᵀ`` with ``U`` an orthonormal basis of a random ``dim``-dimensional
    subspace orthogonal to the all-ones vector (QR of centred Gaussian columns).
    """
    if rows <= dim:
        raise ValueError(f"rows must exceed dim for an exact covariance, got rows={rows}, dim={dim}")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, dim, generator=g, dtype=torch.float64)
    u, _ = torch.linalg.qr(z - z.mean(0))
    xi = math.sqrt(rows) * u * spectrum(dim).sqrt()
    if rotated:
        xi = xi @ random_rotation(dim).T
    zero = torch.zeros(1, dim)
    return Splits(
        x_train=xi.to(torch.float32),
        y_train=torch.zeros(rows),
        x_val=zero,
        y_val=torch.zeros(1),
        x_test=zero.clone(),
        y_test=torch.zeros(1),
    )


def build_quadratic(rotated: bool) -> QuadraticModel:
    """The workload's model; ``θ_0 ~ N(0, I)`` from torch's global RNG."""
    return QuadraticModel(spectrum(), random_rotation() if rotated else None)


def sgd_expected_loss(
    h: Tensor,
    lr: float,
    steps: int,
    batch_size: int,
    *,
    rows: int | None = None,
    init_var: float = 1.0,
) -> float:
    """Closed-form ``E[½ θ_Tᵀ H θ_T]`` of plain SGD after ``steps`` steps (see the module docstring).

    Args:
        h: the Hessian's eigenvalues.
        lr: SGD's learning rate (no momentum, no weight decay).
        steps: ``T``.
        batch_size: ``B``.
        rows: None for independent draws (Zhang et al.'s NQM); ``N`` for reshuffled epochs of the
            ``N`` centred, whitened rows of :func:`quadratic_splits` (``N`` divisible by ``B``).
        init_var: ``E[θ_0²]`` per coordinate (1 for the workloads' ``N(0, I)`` start).

    Returns:
        The expected loss (the expected validation loss of the workloads) as a float.
    """
    h = h.to(torch.float64)
    a = 1.0 - lr * h
    start = a.pow(2 * steps) * init_var
    if rows is None:
        # Σ_{t<T} a^{2(T-1-t)} lr² h / B, summed in closed form where a² != 1
        a2 = a.square()
        geometric = torch.where((a2 - 1).abs() > 1e-12, (1 - a2.pow(steps)) / (1 - a2), torch.full_like(a2, steps))
        noise = lr**2 * h / batch_size * geometric
    else:
        if rows % batch_size:
            raise ValueError(f"rows ({rows}) must be a multiple of batch_size ({batch_size})")
        per_epoch = rows // batch_size
        t = torch.arange(steps, dtype=torch.float64)
        c = a.unsqueeze(1).pow(steps - 1 - t)  # [d, T]
        epoch = (t // per_epoch).long()
        n_epochs = int(epoch[-1]) + 1 if steps else 0
        sums = torch.zeros(h.numel(), n_epochs, dtype=torch.float64).index_add_(1, epoch, c)
        squares = torch.zeros(h.numel(), n_epochs, dtype=torch.float64).index_add_(1, epoch, c.square())
        noise = lr**2 * h / (rows - 1) * (rows / batch_size * squares - sums.square()).sum(1)
    return float(0.5 * (h * (start + noise)).sum())


REFERENCE_LR = 0.05  # plain SGD, well inside its stability limit 2 / max(h) = 0.2

REFERENCE = Reference(
    metric="val_loss",
    value=sgd_expected_loss(spectrum(), REFERENCE_LR, ROWS // BATCH_SIZE * EPOCHS, BATCH_SIZE, rows=ROWS),
    # 4 standard errors of the mean over 1,000 seeds (measured: mean 0.04392, standard error 0.0008;
    # without the without-replacement correction the prediction would be 0.0712)
    tolerance=0.0035,
    source="closed-form expected loss of plain SGD at lr 0.05 after the default budget (Zhang et al. 2019, "
    "https://arxiv.org/abs/1907.04164, Sec. 3, with the without-replacement correction for reshuffled epochs)",
    check="tests/workloads/test_quadratic.py::test_sgd_matches_the_closed_form_expected_loss: the mean over 1,000 "
    "seeds of the workload trained with SGD lies within 4 standard errors",
)
