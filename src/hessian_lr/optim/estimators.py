"""Curvature estimators: each is one small unit with its own per-parameter state.

Shaped like optax's gradient transformations: ``init`` builds the state for one parameter and
``precondition_`` updates the states from the current gradients and rescales those gradients in
place. The wrapper (:mod:`hessian_lr.optim.wrapper`) owns bookkeeping (steps, hyperparameters,
validation, ``state_dict``); an estimator owns only its math.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

from hessian_lr.optim import functional as F

__all__ = ["CurvatureEstimator", "GradDiff", "ESTIMATORS", "get_estimator"]


class CurvatureEstimator(abc.ABC):
    """A running diagonal-curvature estimate ``hhat`` and the gradient rescaling it implies.

    Subclasses set ``name`` and ``state_keys`` (the names of the model-sized tensors they keep
    per parameter) and implement :meth:`init`, :meth:`precondition_` and :meth:`estimate`.
    """

    name: ClassVar[str]
    state_keys: ClassVar[tuple[str, ...]]

    @abc.abstractmethod
    def init(self, param: Tensor, state_dtype: torch.dtype) -> dict[str, Tensor]:
        """Fresh state for ``param``; tensors are zero-filled in ``state_dtype``."""

    @abc.abstractmethod
    def precondition_(
        self,
        grads: list[Tensor],
        params: list[Tensor],
        states: list[dict[str, Tensor]],
        *,
        beta: float,
        eps: float,
        step: int,
        foreach: bool,
    ) -> None:
        """Update every state with its gradient and rescale each gradient in place.

        ``step`` is the 1-based count of updates including this one, shared by all tensors.
        ``foreach`` asks for the multi-tensor path; it is only set when every gradient has
        its state's dtype and device.
        """

    @abc.abstractmethod
    def estimate(self, state: dict[str, Tensor], *, beta: float, step: int) -> Tensor:
        """The current bias-corrected diagonal curvature estimate (a new tensor)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GradDiff(CurvatureEstimator):
    r"""The original estimate: a running average of squared consecutive-gradient differences.

    .. math::
        d_t = g_t - g_{t-1} \quad (g_0 := 0), \qquad
        h_t = \beta h_{t-1} + (1-\beta) d_t^2, \qquad
        \hat h_t = h_t / (1 - \beta^t), \qquad
        \tilde g_t = g_t / \sqrt{\hat h_t + \epsilon}.

    With noiseless gradients of a quadratic, :math:`d_t = H (\theta_{t-1} - \theta_{t-2})`, so
    :math:`d_t^2` measures curvature times step size; with minibatches it also picks up
    :math:`2\,\mathrm{Var}(g)`. Cost: no extra backward pass, two model-sized tensors
    (``prev_grad``, ``h``) per parameter.
    """

    name = "grad-diff"
    state_keys = ("prev_grad", "h")

    def init(self, param: Tensor, state_dtype: torch.dtype) -> dict[str, Tensor]:
        return {
            key: torch.zeros_like(param, dtype=state_dtype, memory_format=torch.preserve_format)
            for key in self.state_keys
        }

    def precondition_(self, grads, params, states, *, beta, eps, step, foreach):  # noqa: D102
        if foreach:
            F.foreach_grad_diff_(
                grads,
                [s["prev_grad"] for s in states],
                [s["h"] for s in states],
                beta=beta,
                eps=eps,
                step=step,
            )
            return
        for grad, state in zip(grads, states):
            F.single_tensor_grad_diff_(grad, state["prev_grad"], state["h"], beta=beta, eps=eps, step=step)

    def estimate(self, state: dict[str, Tensor], *, beta: float, step: int) -> Tensor:
        return state["h"] / F.bias_correction(beta, step) if step > 0 else torch.zeros_like(state["h"])


ESTIMATORS: dict[str, type[CurvatureEstimator]] = {GradDiff.name: GradDiff}


def get_estimator(estimator: str | CurvatureEstimator) -> CurvatureEstimator:
    """Resolve a registered name (``"grad-diff"``, ...) or pass an estimator object through."""
    if isinstance(estimator, CurvatureEstimator):
        return estimator
    if isinstance(estimator, str) and estimator in ESTIMATORS:
        return ESTIMATORS[estimator]()
    raise ValueError(
        f"estimator must be one of {sorted(ESTIMATORS)} or a CurvatureEstimator, got {estimator!r}"
    )
