"""``HessianLRAdaptation``: curvature-adaptive gradient rescaling in front of any torch optimizer."""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from hessian_lr.optim.estimators import CurvatureEstimator, get_estimator

__all__ = ["HessianLRAdaptation"]

# Keys the wrapper adds to each of the base optimizer's param groups. Namespaced, because base
# optimizers already use "eps" (Adam) or "beta" (some pytorch-optimizer classes).
BETA_KEY = "curvature_beta"
EPS_KEY = "curvature_eps"
NONFINITE_POLICIES = ("error", "skip")
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_beta(beta: float) -> None:
    if not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")


def _check_eps(eps: float) -> None:
    if not (isinstance(eps, (int, float)) and eps > 0.0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")


class HessianLRAdaptation(Optimizer):
    r"""Rescale each gradient by an inverse square root of a diagonal curvature estimate, then
    let an already-built base optimizer (Adam, SGD, ...) take its step.

    For every parameter tensor with a gradient, at its ``t``-th step (default estimator
    ``"grad-diff"``):

    .. math::
        d_t = g_t - g_{t-1},\quad g_0 := 0 \\
        h_t = \beta\, h_{t-1} + (1-\beta)\, d_t^{2},\quad h_0 := 0 \\
        \hat h_t = h_t / (1-\beta^{t}) \\
        g_t \leftarrow g_t / \sqrt{\hat h_t + \epsilon}

    All operations are elementwise. First step: with :math:`g_0 := 0` the first difference is
    the gradient itself, so :math:`\hat h_1 = g_1^2` (bias correction makes the zero start
    harmless) and the first rescaled gradient is :math:`g_1/\sqrt{g_1^2+\epsilon}`.
    ``eps`` sits *inside* the square root, so the largest possible amplification of a gradient is
    :math:`1/\sqrt{\epsilon}` (``1e4`` for the default ``1e-8``).

    The wrapper shares the base optimizer's ``param_groups`` list (LR schedulers attached to
    either act on both) and adds ``curvature_beta`` / ``curvature_eps`` to each group, so they
    can differ per group. ``state[p]`` holds ``step`` (int) and the estimator's tensors
    (``prev_grad`` — a copy of the last gradient, never an alias of ``p.grad`` — and ``h``).

    Args:
        base_optimizer: a built ``torch.optim.Optimizer`` over the parameters to train.
        beta: EMA factor of the curvature estimate, in ``[0, 1)``.
        eps: added to :math:`\hat h` under the square root, ``> 0``.
        estimator: a registered estimator name or a :class:`CurvatureEstimator` object.
        nonfinite: what a step does when a gradient holds inf/NaN (outside a ``GradScaler``,
            which skips such steps itself): ``"error"`` raises naming the parameter, ``"skip"``
            skips the whole step (no state changes, no base step). The curvature state is never
            updated from a non-finite gradient.
        state_dtype: dtype of the estimator's state. ``None`` keeps the parameter's dtype, but
            uses float32 for float16/bfloat16 parameters. ``load_state_dict`` keeps the dtype the
            state was saved in (never a silent downcast).
        foreach: use the multi-tensor path (``None``: whenever the tensors allow it).
    """

    def __init__(
        self,
        base_optimizer: Optimizer,
        beta: float = 0.99,
        eps: float = 1e-8,
        *,
        estimator: str | CurvatureEstimator = "grad-diff",
        nonfinite: str = "error",
        state_dtype: torch.dtype | None = None,
        foreach: bool | None = None,
    ) -> None:
        if isinstance(base_optimizer, HessianLRAdaptation):
            raise TypeError("base_optimizer is already a HessianLRAdaptation; wrap the inner optimizer once")
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(
                f"base_optimizer must be a torch.optim.Optimizer instance, got {type(base_optimizer).__name__}"
            )
        _check_beta(beta)
        _check_eps(eps)
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        if state_dtype is not None and not (isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point):
            raise ValueError(f"state_dtype must be a floating torch.dtype or None, got {state_dtype!r}")

        # Not Optimizer.__init__: it would copy the groups; the whole point is to share them.
        self.defaults = {BETA_KEY: beta, EPS_KEY: eps}
        self._init_hook_dicts()
        self._patch_step_function()
        self.base_optimizer = base_optimizer
        self.estimator = get_estimator(estimator)
        self.nonfinite = nonfinite
        self.state_dtype = state_dtype
        self.foreach = foreach
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for group in self.param_groups:
            self._set_group_defaults(group)
        self._warned_capturable_if_run_uncaptured = True

    def _init_hook_dicts(self) -> None:
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()

    # -- shared groups -------------------------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.base_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.base_optimizer.param_groups = value

    def _set_group_defaults(self, group: dict[str, Any]) -> None:
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        _check_beta(group[BETA_KEY])
        _check_eps(group[EPS_KEY])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (which validates it) and give it the wrapper's keys."""
        self.base_optimizer.add_param_group(param_group)
        self._set_group_defaults(self.param_groups[-1])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    # -- the step ------------------------------------------------------------------------
    def _state_for(self, param: Tensor) -> dict[str, Any]:
        state = self.state[param]
        if not state:
            dtype = self.state_dtype or (torch.float32 if param.dtype in LOW_PRECISION else param.dtype)
            state["step"] = 0
            state.update(self.estimator.init(param, dtype))
        return state

    def _params_with_grad(self, group: dict[str, Any]) -> list[Tensor]:
        params = []
        for p in group["params"]:
            if p.grad is None or not p.requires_grad:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("HessianLRAdaptation does not support sparse gradients")
            params.append(p)
        return params

    def _find_nonfinite(self) -> Tensor | None:
        """The first parameter whose gradient holds inf/NaN, or None (one sync for all)."""
        params = [p for group in self.param_groups for p in self._params_with_grad(group)]
        if not params:
            return None
        # The max-abs norm cannot overflow for finite values, unlike the 2-norm.
        norms = torch._foreach_norm([p.grad for p in params], float("inf"))
        finite = torch.stack([n.float() for n in norms]).isfinite()
        if bool(finite.all()):
            return None
        return params[int((~finite).nonzero()[0])]

    def _parameter_name(self, param: Tensor) -> str:
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p is param:
                    names = group.get("param_names")
                    label = f"'{names[pi]}' " if names else ""
                    return f"{label}(group {gi}, index {pi}, shape {tuple(p.shape)})"
        return f"(shape {tuple(param.shape)})"

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Rescale the gradients and take one base-optimizer step; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        bad = self._find_nonfinite()
        if bad is not None:
            if self.nonfinite == "skip":
                return loss
            raise FloatingPointError(
                f"non-finite gradient in parameter {self._parameter_name(bad)}; "
                "pass nonfinite='skip' to skip such steps, or use torch.amp.GradScaler"
            )
        for group in self.param_groups:
            self._precondition_group(group)
        self.base_optimizer.step()
        return loss

    def _precondition_group(self, group: dict[str, Any]) -> None:
        # Tensors that can share one multi-tensor call: same step count and state dtype = grad dtype.
        batches: dict[tuple[int, bool], list[tuple[Tensor, dict[str, Any]]]] = defaultdict(list)
        for p in self._params_with_grad(group):
            state = self._state_for(p)
            state["step"] += 1
            same_dtype = all(state[k].dtype == p.grad.dtype for k in self.estimator.state_keys)
            batches[(state["step"], same_dtype)].append((p, state))
        for (step, same_dtype), members in batches.items():
            params = [p for p, _ in members]
            foreach = same_dtype and len(members) > 1 and self.foreach is not False
            self.estimator.precondition_(
                [p.grad for p in params],
                params,
                [s for _, s in members],
                beta=group[BETA_KEY],
                eps=group[EPS_KEY],
                step=step,
                foreach=foreach,
            )

    def curvature_estimate(self, param: Tensor) -> Tensor | None:
        """The current bias-corrected curvature estimate of ``param`` (None before its first step)."""
        state = self.state.get(param)
        if not state:
            return None
        group = next(g for g in self.param_groups if any(p is param for p in g["params"]))
        return self.estimator.estimate(state, beta=group[BETA_KEY], step=state["step"])

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """``{"state": {index: wrapper state}, "param_groups": ..., "base": base.state_dict()}``.

        Parameters are indexed as torch does: in order through the groups. The groups (with the
        wrapper's per-group keys) are those of the base optimizer's state dict.
        """
        base = self.base_optimizer.state_dict()
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        state = {
            index[id(p)]: {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in s.items()}
            for p, s in self.state.items()
            if s
        }
        return {"state": state, "param_groups": base["param_groups"], "base": base}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore both states. Tensors move to their parameter's device but keep their dtype."""
        if not isinstance(state_dict, dict) or "base" not in state_dict or "state" not in state_dict:
            raise ValueError("state_dict is not a HessianLRAdaptation state dict (needs 'state' and 'base')")
        self.base_optimizer.load_state_dict(state_dict["base"])
        params = [p for g in self.param_groups for p in g["params"]]
        self.state = defaultdict(dict)
        for raw_index, saved in state_dict["state"].items():
            index = int(raw_index)
            if not 0 <= index < len(params):
                raise ValueError(f"state_dict has state for parameter {index}, but there are {len(params)}")
            p = params[index]
            self.state[p] = {
                k: (v.to(device=p.device, copy=True) if isinstance(v, Tensor) else v) for k, v in saved.items()
            }

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(estimator={self.estimator!r}, beta={self.defaults[BETA_KEY]}, "
            f"eps={self.defaults[EPS_KEY]}, base={self.base_optimizer!r})"
        )
