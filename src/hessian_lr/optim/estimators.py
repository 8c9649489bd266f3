"""Curvature estimators: each is one small unit with its own per-parameter state.

Shaped like optax's gradient transformations: ``init`` builds the state for one parameter and
``precondition_`` updates the states from the current gradients and rescales those gradients in
place. The wrapper (:mod:`hessian_lr.optim.wrapper`) owns bookkeeping (steps, hyperparameters,
validation, ``state_dict``); an estimator owns only its math.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from hessian_lr.optim import functional as F
from hessian_lr.optim.hvp import accumulate_grads_, gauss_newton_bartlett_sample, hutchinson_sample

__all__ = [
    "CurvatureEstimator",
    "GradDiff",
    "SquaredGrad",
    "Secant",
    "SecantRMS",
    "Hutchinson",
    "GaussNewtonBartlett",
    "ESTIMATORS",
    "get_estimator",
]


def _with_shared_doc(own: str, shared: type) -> str | None:
    """``own`` followed by ``shared``'s docstring minus its first line (the shared plumbing's
    description), or None under ``python -OO``, which strips the docstrings this is built from."""
    if shared.__doc__ is None:
        return None
    return own + shared.__doc__.split("\n", 1)[1]


class CurvatureEstimator(abc.ABC):
    """A running diagonal-curvature estimate ``hhat`` and the gradient rescaling it implies.

    Subclasses set ``name`` and ``state_keys`` (the names of the model-sized tensors they keep
    per parameter) and implement :meth:`init`, :meth:`precondition_` and :meth:`estimate`.
    """

    name: ClassVar[str]
    state_keys: ClassVar[tuple[str, ...]]
    # The estimate approximates (a curvature scale) ** estimate_power: 2 for the squared
    # estimates the wrapper divides by the square root of (grad-diff, squared-grad), 1 for
    # estimates in the units of diag(H) (secant, hutchinson, gauss-newton). The fidelity study
    # compares estimate ** (1 / estimate_power) with the exact diagonal.
    estimate_power: ClassVar[float] = 2.0

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

    def backward(
        self,
        loss: Tensor,
        params: list[Tensor],
        betas: list[float],
        state_for: Callable[[Tensor], dict],
        *,
        logits: Tensor | None = None,
    ) -> None:
        """The training step's backward pass (``HessianLRAdaptation.backward`` calls it).

        Gradient-only estimators need nothing but ``loss.backward()``; estimators that sample
        curvature from an extra pass (``hutchinson``, ``gauss-newton``) override this.
        ``state_for(p)`` returns (creating on first use) the wrapper's state of ``p``;
        ``betas[i]`` is the EMA factor of ``params[i]``'s group.
        """
        loss.backward()

    def spec(self) -> dict[str, Any]:
        """What a checkpoint records to recognise this estimator: ``{"name", "options"}``, the
        options being the public bool/int/float/str attributes (the constructor's arguments).
        ``HessianLRAdaptation.load_state_dict`` refuses a state dict whose record differs."""
        options = {
            key: value
            for key, value in sorted(vars(self).items())
            if not key.startswith("_") and isinstance(value, (bool, int, float, str))
        }
        return {"name": self.name, "options": options}

    def state_dict(self) -> dict[str, Any]:
        """The estimator's own state beyond the per-parameter tensors (none for most estimators)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

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


# ---------------------------------------------------------------------------------------------
# More estimators. Every one below states its math, how its estimate becomes the gradient scale,
# and its cost. "Curvature units" means the estimate approximates |diag(H)| itself
# (estimate_power = 1); grad-diff and squared-grad estimate a *squared* scale (estimate_power = 2).
# ---------------------------------------------------------------------------------------------


def _rescale_(grad: Tensor, g: Tensor, denom: Tensor) -> None:
    """``grad <- g / denom``, computed in ``denom``'s dtype and rounded once into ``grad``."""
    if grad.dtype == denom.dtype and g is grad:
        grad.div_(denom)
    else:
        grad.copy_(g.div(denom))


def _curvature_denominator(curvature: Tensor, eps: float) -> Tensor:
    """``sqrt(c**2 + eps)`` in place on ``curvature``: ≈ ``c``, with amplification capped at 1/sqrt(eps)."""
    return curvature.square_().add_(eps).sqrt_()


class SquaredGrad(CurvatureEstimator):
    r"""The Adam/RMSprop control: a running average of squared gradients.

    .. math::
        h_t = \beta h_{t-1} + (1-\beta) g_t^2, \qquad \hat h_t = h_t / (1-\beta^t), \qquad
        \tilde g_t = g_t / \sqrt{\hat h_t + \epsilon}.

    This is not a curvature estimate by construction; on minibatches :math:`E[g^2] =
    (E g)^2 + \mathrm{Var}(g)` and gradient noise often tracks curvature, which is what makes it a
    useful control for ``grad-diff`` (whose :math:`E[d^2] \approx 2\mathrm{Var}(g) + (H\Delta\theta)^2`).
    Wrapped around Adam it is nearly redundant (Adam already divides by a slower average of
    :math:`g^2`); around SGD it makes RMSprop without momentum. Cost: no extra backward pass,
    one model-sized tensor (``h``) per parameter.
    """

    name = "squared-grad"
    state_keys = ("h",)
    estimate_power = 2.0

    def init(self, param: Tensor, state_dtype: torch.dtype) -> dict[str, Tensor]:
        return {"h": torch.zeros_like(param, dtype=state_dtype, memory_format=torch.preserve_format)}

    def precondition_(self, grads, params, states, *, beta, eps, step, foreach):  # noqa: D102
        scale = 1.0 / F.bias_correction(beta, step)
        if foreach:
            hs = [s["h"] for s in states]
            torch._foreach_mul_(hs, beta)
            torch._foreach_addcmul_(hs, grads, grads, value=1.0 - beta)
            denoms = torch._foreach_mul(hs, scale)
            torch._foreach_add_(denoms, eps)
            torch._foreach_sqrt_(denoms)
            torch._foreach_div_(grads, denoms)
            return
        for grad, state in zip(grads, states):
            h = state["h"]
            g = grad.to(h.dtype)
            h.mul_(beta).addcmul_(g, g, value=1.0 - beta)
            _rescale_(grad, g, h.mul(scale).add_(eps).sqrt_())

    def estimate(self, state: dict[str, Tensor], *, beta: float, step: int) -> Tensor:
        return state["h"] / F.bias_correction(beta, step) if step > 0 else torch.zeros_like(state["h"])

    def __repr__(self) -> str:
        return "SquaredGrad()"


class _SecantBase(CurvatureEstimator):
    """Shared plumbing of the diagonal quasi-Newton (secant) estimators.

    Each step pairs ``s = θ_t − θ_{t−1}`` (the parameters now minus the parameters at which the
    previous gradient was taken) with ``y = g_t − g_{t−1}``. A coordinate's pair is used only where
    ``|s| > rel_step_tol · |θ_t|`` — below that the difference is at the rounding level of the
    parameter (``rel_step_tol=1e-5`` ≈ 80 float32 ulps) and ``y/s`` is noise; where it is not used
    the running averages keep their value (both numerator and weight decay together). The first
    step has no pair. The resulting curvature ``c`` is bounded below by ``min_curvature`` and
    turned into the gradient scale as

    .. math::
        \\tilde g = g / \\sqrt{\\max(c, c_{\\min})^2 + \\epsilon} \\;\\approx\\; g / \\max(c, c_{\\min}),

    a diagonal Newton step for an SGD base (cf. Apollo's ``g / max(|B|, σ)``); the effective floor
    is ``max(c_min, sqrt(eps))`` (1e-4 with the default ``eps=1e-8``; the mnist1d MLP's exact
    diagonal spans ~1e-7 to 1e-1, median ~2e-4; with an SGD base a floor far below the typical
    curvature turns gradient noise on flat coordinates into huge steps). A
    coordinate with no usable pair yet takes the mean curvature of its tensor's coordinates that
    have one, and ``init_curvature`` (default 1: the gradient passes unchanged) before any has.
    Cost: no extra backward pass; four model-sized tensors per parameter (``prev_grad``,
    ``prev_param`` and two running averages).
    """

    estimate_power = 1.0
    state_keys: ClassVar[tuple[str, ...]]

    def __init__(self, *, min_curvature: float = 1e-6, init_curvature: float = 1.0, rel_step_tol: float = 1e-5):
        if not min_curvature >= 0.0:
            raise ValueError(f"min_curvature must be >= 0, got {min_curvature!r}")
        if not init_curvature > 0.0:
            raise ValueError(f"init_curvature must be > 0, got {init_curvature!r}")
        if not rel_step_tol >= 0.0:
            raise ValueError(f"rel_step_tol must be >= 0, got {rel_step_tol!r}")
        self.min_curvature = float(min_curvature)
        self.init_curvature = float(init_curvature)
        self.rel_step_tol = float(rel_step_tol)

    def init(self, param: Tensor, state_dtype: torch.dtype) -> dict[str, Tensor]:
        return {
            key: torch.zeros_like(param, dtype=state_dtype, memory_format=torch.preserve_format)
            for key in self.state_keys
        }

    @abc.abstractmethod
    def _absorb_(self, state: dict[str, Tensor], y: Tensor, s: Tensor, mask: Tensor, beta: float) -> None:
        """Fold one masked secant pair into the running averages."""

    @abc.abstractmethod
    def _raw(self, state: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(curvature, has_sample)``: the averaged curvature (new tensor) and where it is defined."""

    def precondition_(self, grads, params, states, *, beta, eps, step, foreach):  # noqa: D102
        for grad, param, state in zip(grads, params, states):
            prev_grad, prev_param = state["prev_grad"], state["prev_param"]
            g = grad.to(prev_grad.dtype)
            theta = param.detach().to(prev_param.dtype)
            if step > 1:
                s = theta - prev_param
                y = g - prev_grad
                mask = s.abs() > theta.abs().mul(self.rel_step_tol)
                self._absorb_(state, y, s, mask, beta)
            prev_grad.copy_(g)
            prev_param.copy_(theta)
            curvature, has = self._raw(state)
            curvature = torch.where(has, curvature, self._fallback(curvature, has)).clamp_min_(self.min_curvature)
            _rescale_(grad, prev_grad, _curvature_denominator(curvature, eps))

    def _fallback(self, curvature: Tensor, has: Tensor) -> Tensor:
        """The curvature of coordinates without a usable pair: the mean over the tensor's
        coordinates that have one, or ``init_curvature`` when none has (no host sync)."""
        count = has.sum()
        mean = (curvature * has).sum() / count.clamp_min(1)
        return torch.where(count > 0, mean, torch.full_like(mean, self.init_curvature))

    def estimate(self, state: dict[str, Tensor], *, beta: float, step: int) -> Tensor:
        """The averaged curvature, 0 where no usable pair has been seen (before the floor)."""
        curvature, has = self._raw(state)
        return curvature.mul_(has)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min_curvature={self.min_curvature}, init_curvature={self.init_curvature}, "
            f"rel_step_tol={self.rel_step_tol})"
        )


class Secant(_SecantBase):
    __doc__ = _with_shared_doc(
        r"""Diagonal quasi-Newton: a masked running average of the elementwise secant ratio ``|y/s|``.

    .. math::
        m_t = [\,|s_t| > \tau |\theta_t|\,], \qquad
        h_t = \beta h_{t-1} + (1-\beta)\, m_t |y_t / s_t|, \qquad
        w_t = \beta w_{t-1} + (1-\beta)\, m_t, \qquad c_t = h_t / w_t.

    ``w`` is a per-coordinate bias correction: it makes ``c`` the weighted mean of the ratios
    actually observed, so a constant ratio is recovered exactly (on a noiseless diagonal
    quadratic ``y = H s`` and ``c = |H_ii|``). The absolute value rectifies negative curvature
    (Apollo does the same). With minibatch noise ``y/s`` is heavy-tailed where ``s`` is small.
    """,
        _SecantBase,
    )

    name = "secant"
    state_keys = ("prev_grad", "prev_param", "h", "w")

    def _absorb_(self, state, y, s, mask, beta):
        ratio = y.div_(torch.where(mask, s, torch.ones_like(s))).abs_().mul_(mask)
        state["h"].mul_(beta).add_(ratio, alpha=1.0 - beta)
        state["w"].mul_(beta).add_(mask.to(state["w"].dtype), alpha=1.0 - beta)

    def _raw(self, state):
        w = state["w"]
        has = w > 0
        return state["h"] / torch.where(has, w, torch.ones_like(w)), has


class SecantRMS(_SecantBase):
    __doc__ = _with_shared_doc(
        r"""Diagonal quasi-Newton from a ratio of running averages: ``c = sqrt(avg y² / avg s²)``.

    .. math::
        m_t = [\,|s_t| > \tau |\theta_t|\,], \qquad
        a_t = \beta a_{t-1} + (1-\beta)\, m_t y_t^2, \qquad
        b_t = \beta b_{t-1} + (1-\beta)\, m_t s_t^2, \qquad c_t = \sqrt{a_t / b_t}.

    Bias corrections cancel in the ratio. On a noiseless diagonal quadratic ``c = |H_ii|``
    exactly; with noise, large steps dominate both averages, which tames the heavy tail of the
    per-step ratio (``secant``).
    """,
        _SecantBase,
    )

    name = "secant-rms"
    state_keys = ("prev_grad", "prev_param", "ysq", "ssq")

    def _absorb_(self, state, y, s, mask, beta):
        state["ysq"].mul_(beta).addcmul_(y.mul_(mask), y, value=1.0 - beta)
        state["ssq"].mul_(beta).addcmul_(s.mul_(mask), s, value=1.0 - beta)

    def _raw(self, state):
        ssq = state["ssq"]
        has = ssq > 0
        return state["ysq"].div(torch.where(has, ssq, torch.ones_like(ssq))).sqrt_(), has


def _byte_tensor(state: bytes | Tensor) -> Tensor:
    """A generator state as ``Generator.set_state`` takes it: a CPU uint8 tensor."""
    if isinstance(state, Tensor):
        return state.to(device="cpu", dtype=torch.uint8)
    return torch.tensor(list(state), dtype=torch.uint8)


class _SampledCurvature(CurvatureEstimator):
    """Shared plumbing of estimators whose samples come from an extra backward pass.

    Protocol: call ``optimizer.backward(loss, logits=logits)`` (see
    :meth:`HessianLRAdaptation.backward`) instead of ``loss.backward()``. On every
    ``update_every``-th step (steps 1, k+1, 2k+1, ...) it computes the gradient *and* a curvature
    sample ``u`` and folds it in: ``h ← β h + (1−β) u`` with its own update counter ``n`` (kept in
    the state as ``curvature_updates``); on other steps it is exactly ``loss.backward()``. A
    sample with any non-finite entry is dropped (the running average never sees it). The step
    then rescales with

    .. math::
        \\hat h = h / (1-\\beta^n), \\qquad
        \\tilde g = g / \\sqrt{\\max(|\\hat h|, c_{\\min})^2 + \\epsilon} \\;\\approx\\; g / \\max(|\\hat h|, c_{\\min}),

    i.e. diagonal Newton with the curvature rectified and floored (effective floor
    ``max(c_min, sqrt(eps))``, 1e-4 with the default ``eps``). ``step()`` raises if no
    sample was ever taken (plain ``loss.backward()`` cannot provide one). Samples are drawn from
    the ``generator`` given, else from the estimator's own generator per device, seeded from torch's
    global RNG when the estimator is built (so ``torch.manual_seed`` makes runs repeatable); either
    way its state is part of the optimizer's state dict, so a resumed run draws the same samples
    as an uninterrupted one. With ``spatial_average`` a sample of a tensor with ≥ 3 dims (conv kernels
    ``(out, in, *kernel)``) is averaged over the kernel dims, as in AdaHessian.
    """

    state_keys = ("h",)
    estimate_power = 1.0
    backward_needs_logits: ClassVar[bool] = False

    def __init__(
        self,
        *,
        update_every: int = 1,
        min_curvature: float = 1e-6,
        spatial_average: bool = False,
        generator: torch.Generator | None = None,
    ):
        if not (isinstance(update_every, int) and update_every >= 1):
            raise ValueError(f"update_every must be an int >= 1, got {update_every!r}")
        if not min_curvature >= 0.0:
            raise ValueError(f"min_curvature must be >= 0, got {min_curvature!r}")
        self.update_every = update_every
        self.min_curvature = float(min_curvature)
        self.spatial_average = bool(spatial_average)
        self.generator = generator
        # A private stream when none is given, seeded from the global RNG as DataLoader seeds its
        # workers; one generator per device type, since sampling happens on the parameters' device.
        self._seed = int(torch.empty((), dtype=torch.int64).random_().item()) if generator is None else None
        self._generators: dict[str, torch.Generator] = {}

    def generator_for(self, device: torch.device) -> torch.Generator:
        """The generator samples on ``device`` are drawn from."""
        if self.generator is not None:
            return self.generator
        key = str(torch.device(device))
        generator = self._generators.get(key)
        if generator is None:
            generator = self._generators[key] = torch.Generator(device=key).manual_seed(self._seed)
        return generator

    def state_dict(self) -> dict[str, Any]:
        """The seed and the generator states (as bytes: plain data for ``weights_only`` loading
        and distributed checkpoints)."""
        generators = {"given": self.generator} if self.generator is not None else self._generators
        return {
            "seed": self._seed,
            "generator_states": {key: bytes(g.get_state().tolist()) for key, g in generators.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        states = state.get("generator_states", {})
        if self.generator is not None:
            if "given" in states:
                self.generator.set_state(_byte_tensor(states["given"]))
            return
        if state.get("seed") is not None:
            self._seed = int(state["seed"])
        self._generators = {}
        for key, value in states.items():
            if key != "given":
                self.generator_for(torch.device(key)).set_state(_byte_tensor(value))

    def init(self, param: Tensor, state_dtype: torch.dtype) -> dict[str, Tensor]:
        return {
            "h": torch.zeros_like(param, dtype=state_dtype, memory_format=torch.preserve_format),
            "curvature_updates": 0,  # type: ignore[dict-item]  # an int, saved with the state
        }

    @abc.abstractmethod
    def sample(self, loss: Tensor, params: list[Tensor], *, logits: Tensor | None) -> list[Tensor | None]:
        """Run the backward pass (gradients into ``p.grad``) and return one curvature sample per param."""

    def due(self, step: int) -> bool:
        """Whether the step after ``step`` completed steps takes a curvature sample."""
        return step % self.update_every == 0

    def backward(self, loss, params, betas, state_for, *, logits=None):  # noqa: D102
        states = [state_for(p) for p in params]
        if not any(self.due(s["step"]) for s in states):
            loss.backward()
            return
        samples = self.sample(loss, list(params), logits=logits)
        if not all(bool(u.isfinite().all()) for u in samples if u is not None):
            return
        for state, u, beta in zip(states, samples, betas):
            if u is not None:
                self.absorb_(state, u, beta=beta)

    def absorb_(self, state: dict, sample: Tensor, *, beta: float) -> None:
        """Fold one curvature sample into the running average (also used by the fidelity study)."""
        if self.spatial_average and sample.dim() >= 3:
            sample = sample.mean(dim=tuple(range(2, sample.dim())), keepdim=True).expand_as(sample)
        h = state["h"]
        h.mul_(beta).add_(sample.to(h.dtype), alpha=1.0 - beta)
        state["curvature_updates"] += 1

    def precondition_(self, grads, params, states, *, beta, eps, step, foreach):  # noqa: D102
        for grad, state in zip(grads, states):
            n = state["curvature_updates"]
            if n == 0:
                call = "optimizer.backward(loss, logits=logits)" if self.backward_needs_logits else "optimizer.backward(loss)"
                raise RuntimeError(
                    f"the {self.name!r} estimator has no curvature sample yet: call {call} "
                    "instead of loss.backward() before optimizer.step()"
                )
            h = state["h"]
            curvature = h.div(F.bias_correction(beta, n)).abs_().clamp_min_(self.min_curvature)
            _rescale_(grad, grad.to(h.dtype), _curvature_denominator(curvature, eps))

    def estimate(self, state: dict[str, Tensor], *, beta: float, step: int) -> Tensor:
        """The bias-corrected running average of the samples (signed, before rectifying/flooring)."""
        n = state["curvature_updates"]
        return state["h"] / F.bias_correction(beta, n) if n > 0 else torch.zeros_like(state["h"])

    def __repr__(self) -> str:
        extra = f", n_samples={self.n_samples}" if hasattr(self, "n_samples") else ""
        return (
            f"{type(self).__name__}(update_every={self.update_every}, min_curvature={self.min_curvature}"
            f", spatial_average={self.spatial_average}{extra})"
        )


class Hutchinson(_SampledCurvature):
    __doc__ = _with_shared_doc(
        r"""Hutchinson's diagonal estimate ``z ⊙ (H z)`` with Rademacher ``z`` (AdaHessian, Sophia-H).

    :math:`E[z \odot Hz] = \mathrm{diag}(H)`, with per-probe variance :math:`\sum_{j \ne i} H_{ij}^2`
    for entry ``i`` — large when off-diagonal curvature dominates, and individual entries are
    often negative even where ``diag(H) ≥ 0``. ``n_samples`` probes are averaged per update
    (:func:`hessian_lr.optim.hvp.hutchinson_sample`). Cost per update: the backward runs with
    ``create_graph=True`` plus one double-backward per probe (≈ 2–3× a plain backward for one
    probe), graph released inside the helper; one model-sized tensor (``h``) per parameter.
    """,
        _SampledCurvature,
    )

    name = "hutchinson"

    def __init__(self, *, n_samples: int = 1, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(n_samples, int) and n_samples >= 1):
            raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
        self.n_samples = n_samples

    def sample(self, loss, params, *, logits=None):  # noqa: D102
        generator = self.generator_for(params[0].device)
        grads, samples = hutchinson_sample(loss, params, n_samples=self.n_samples, generator=generator)
        accumulate_grads_(params, grads)
        return samples


class GaussNewtonBartlett(_SampledCurvature):
    __doc__ = _with_shared_doc(
        r"""Gauss–Newton–Bartlett (Sophia-G): ``B · ĝ ⊙ ĝ``, ``ĝ`` the gradient for labels sampled
    from the model's own softmax.

    An unbiased sample of the Gauss–Newton diagonal of the mean cross-entropy
    (:func:`hessian_lr.optim.hvp.gauss_newton_bartlett_sample`); always ≥ 0. For networks whose
    every layer enters the logits piecewise linearly (ReLU MLPs and CNNs) the Gauss–Newton and
    Hessian *diagonals* coincide, so here it is an unbiased estimate of diag(H) itself.
    It fits the interface only for softmax-cross-entropy training: the backward needs the
    ``logits`` (``optimizer.backward(loss, logits=logits)``) and assumes ``loss`` is the mean
    cross-entropy over the batch's rows. Cost per update: one extra backward through the same
    graph (the first is run with ``retain_graph=True``); one model-sized tensor per parameter.
    """,
        _SampledCurvature,
    )

    name = "gauss-newton"
    backward_needs_logits = True

    def sample(self, loss, params, *, logits=None):  # noqa: D102
        if logits is None:
            raise ValueError("the 'gauss-newton' estimator needs the logits: optimizer.backward(loss, logits=logits)")
        generator = self.generator_for(logits.device)
        samples = gauss_newton_bartlett_sample(logits, params, generator=generator, retain_graph=True)
        loss.backward()
        return samples


for _cls in (SquaredGrad, Secant, SecantRMS, Hutchinson, GaussNewtonBartlett):
    ESTIMATORS[_cls.name] = _cls
del _cls
