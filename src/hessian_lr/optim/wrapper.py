"""``HessianLRAdaptation``: curvature-adaptive gradient rescaling in front of any torch optimizer."""

from __future__ import annotations

import functools
import math
import sys
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from hessian_lr.optim.estimators import CurvatureEstimator, GradDiff, get_estimator

__all__ = ["HessianLRAdaptation"]

# Keys the wrapper adds to each of the base optimizer's param groups. Namespaced, because base
# optimizers already use "eps" (Adam) or "beta" (some pytorch-optimizer classes).
BETA_KEY = "curvature_beta"
EPS_KEY = "curvature_eps"
NONFINITE_POLICIES = ("error", "skip")
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_beta(beta: float, name: str = "beta") -> None:
    if isinstance(beta, bool) or not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {beta!r}")


def _check_eps(eps: float, name: str = "eps") -> None:
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and eps > 0.0 and math.isfinite(eps)):
        raise ValueError(f"{name} must be a finite number > 0, i.e. in (0, inf), got {eps!r}")


def _first_nonfinite(grads: list[Tensor]) -> int | None:
    """Index of the first gradient holding inf/NaN, or None.

    One ``_foreach_norm`` (the 2-norm: a fast vectorized pass, unlike the max-norm) flags
    candidates; a 2-norm can overflow for huge finite values, so candidates are confirmed with an
    exact ``isfinite`` check before anything is reported.
    """
    norms = torch._foreach_norm(grads, 2)
    if len({n.dtype for n in norms}) > 1:
        norms = [n.float() for n in norms]
    if bool(torch.stack(norms).isfinite().all()):
        return None
    for i, n in enumerate(norms):
        if not bool(n.isfinite()) and not bool(grads[i].isfinite().all()):
            return i
    return None


class _Plan:
    """Per-step lists cached until the parameter set or the state changes.

    ``params`` / ``states`` / ``prevs`` / ``hs`` cover every parameter that has state, in group
    order; ``pending`` holds those still without state. Hyperparameter rows: one per group whose
    parameters share a step count (``group_steps[gi]``), else one per parameter (``row_specs``
    entries ``(group, state or None, group index)``); ``rows[i]`` is parameter i's row.
    """

    __slots__ = (
        "key", "params", "states", "prevs", "hs", "pending", "rows", "row_specs",
        "group_steps", "same_dtype", "kernel_ok",
    )

    def __init__(self, groups: list[dict[str, Any]], all_state: dict[Tensor, dict[str, Any]], keys: tuple) -> None:
        self.key = self._key(groups)
        self.params: list[Tensor] = []
        self.states: list[dict[str, Any]] = []
        self.pending: list[Tensor] = []
        self.rows: list[int] = []
        self.row_specs: list[tuple[dict[str, Any], dict[str, Any] | None, int]] = []
        self.group_steps: list[int] = []
        self.same_dtype: list[bool] = []
        for gi, group in enumerate(groups):
            members = []
            for p in group["params"]:
                state = all_state.get(p)
                if state:
                    members.append((p, state))
                else:
                    self.pending.append(p)
            steps = {state["step"] for _, state in members}
            uniform = len(steps) <= 1
            self.group_steps.append(steps.pop() if len(steps) == 1 else 0)
            if uniform:
                self.row_specs.append((group, None, gi))
            for p, state in members:
                if not uniform:
                    self.row_specs.append((group, state, gi))
                self.rows.append(len(self.row_specs) - 1)
                self.params.append(p)
                self.states.append(state)
                self.same_dtype.append(all(state[k].dtype == p.dtype for k in keys))
        self.kernel_ok = keys == ("prev_grad", "h")
        self.prevs = [s["prev_grad"] for s in self.states] if self.kernel_ok else []
        self.hs = [s["h"] for s in self.states] if self.kernel_ok else []

    @staticmethod
    def _key(groups: list[dict[str, Any]]) -> tuple:
        return tuple((id(g["params"]), len(g["params"])) for g in groups)

    def matches(self, groups: list[dict[str, Any]]) -> bool:
        return self.key == self._key(groups)


def _eager_under_compile(method: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compiler.disable(method)``, decided at call time.

    Applying ``torch.compiler.disable`` at class definition imports ``torch._dynamo`` (~1.2 s), a
    cost every process importing this module would pay. Nothing can be compiling before dynamo is
    imported, so until then the plain method runs.
    """
    disabled: Callable[..., Any] | None = None

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal disabled
        if "torch._dynamo" not in sys.modules:
            return method(*args, **kwargs)
        if disabled is None:
            disabled = torch.compiler.disable(method)
        return disabled(*args, **kwargs)

    return call


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
    (``prev_grad`` — a copy of the last gradient, never an alias of ``p.grad`` — and ``h``):
    exactly two persistent tensors per parameter, and no model-sized temporaries per step.

    A parameter whose ``grad`` is None on a step (or that has ``requires_grad=False``) is
    skipped: its state is untouched and its own step count drives its bias correction later.
    Sparse gradients raise ``RuntimeError``. Inside :meth:`step` the pre-conditioning runs
    eagerly even in a ``torch.compile``-d training step (``torch.compiler.disable``).

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
        foreach: pure-torch path only: use ``_foreach_`` ops (``None``: whenever the tensors
            allow it; ``False``: one tensor at a time).
        fused: the compiled C++ kernel for the grad-diff estimator (one call per step, one pass
            over memory, see :mod:`hessian_lr.optim.kernel`). ``None``: use it if it is already
            built on this machine, else pure-torch ops; ``True``: build it if needed (about 35 s
            once, cached on disk; falls back to pure torch with a warning if the build fails);
            ``False``: never. The two paths agree bit for bit in the tests (float32/64, bf16/fp16).
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
        fused: bool | None = None,
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
        if foreach not in (None, True, False):
            raise ValueError(f"foreach must be None, True or False, got {foreach!r}")
        if fused not in (None, True, False):
            raise ValueError(f"fused must be None, True or False, got {fused!r}")

        # Not Optimizer.__init__: it would copy the groups; the whole point is to share them.
        self.defaults = {**base_optimizer.defaults, BETA_KEY: beta, EPS_KEY: eps}
        self._init_hook_dicts()
        self._patch_step_function()
        self.base_optimizer = base_optimizer
        self.estimator = get_estimator(estimator)
        self.nonfinite = nonfinite
        self.state_dtype = state_dtype
        self.foreach = foreach
        self.fused = fused
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for group in self.param_groups:
            self._set_group_defaults(group)
        self._warned_capturable_if_run_uncaptured = True
        self._plan: _Plan | None = None
        self._kernel = self._resolve_kernel()

    def _resolve_kernel(self) -> Any:
        """The compiled grad-diff kernel when the estimator is grad-diff and ``fused`` allows it."""
        if self.fused is False or type(self.estimator) is not GradDiff:
            if self.fused and type(self.estimator) is not GradDiff:
                raise ValueError(f"fused=True needs the grad-diff estimator, not {self.estimator!r}")
            return None
        from hessian_lr.optim import kernel

        return kernel.load(compile=bool(self.fused))

    @property
    def uses_fused_kernel(self) -> bool:
        """Whether :meth:`step` runs the compiled kernel (else pure-torch ops)."""
        return self._kernel is not None

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
        self._plan = None

    def _set_group_defaults(self, group: dict[str, Any]) -> None:
        group.setdefault(BETA_KEY, self.defaults[BETA_KEY])
        group.setdefault(EPS_KEY, self.defaults[EPS_KEY])
        _check_beta(group[BETA_KEY], BETA_KEY)
        _check_eps(group[EPS_KEY], EPS_KEY)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (which validates it) and give it the wrapper's keys.

        ``curvature_beta`` / ``curvature_eps`` in ``param_group`` set this group's values.
        """
        for key, check in ((BETA_KEY, _check_beta), (EPS_KEY, _check_eps)):
            if isinstance(param_group, dict) and key in param_group:
                check(param_group[key], key)
        self.base_optimizer.add_param_group(param_group)
        self._set_group_defaults(self.param_groups[-1])
        self._plan = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    # -- the step ------------------------------------------------------------------------
    def _new_state(self, param: Tensor) -> dict[str, Any]:
        dtype = self.state_dtype or (torch.float32 if param.dtype in LOW_PRECISION else param.dtype)
        state: dict[str, Any] = {"step": 0}
        state.update(self.estimator.init(param, dtype))
        self.state[param] = state
        return state

    def _get_plan(self) -> _Plan:
        groups = self.param_groups
        plan = self._plan
        if plan is not None and plan.matches(groups):
            return plan
        for group in groups:  # groups added to the base optimizer directly get the defaults too
            if BETA_KEY not in group or EPS_KEY not in group:
                self._set_group_defaults(group)
        plan = self._plan = _Plan(groups, self.state, self.estimator.state_keys)
        return plan

    def _init_pending(self, plan: _Plan) -> _Plan:
        """Create state for parameters that got their first gradient; re-plan if any did."""
        fresh = False
        for p in plan.pending:
            if p.grad is not None and p.requires_grad:
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"HessianLRAdaptation does not support sparse gradients (parameter {self._parameter_name(p)})"
                    )
                self._new_state(p)
                fresh = True
        if not fresh:
            return plan
        self._plan = None
        return self._get_plan()

    def _nonfinite_error(self, param: Tensor) -> FloatingPointError:
        return FloatingPointError(
            f"non-finite gradient in parameter {self._parameter_name(param)}; "
            "pass nonfinite='skip' to skip such steps, or use torch.amp.GradScaler"
        )

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
        """Rescale the gradients and take one base-optimizer step; returns the closure's loss.

        With ``nonfinite="skip"`` a step that finds inf/NaN in a gradient changes nothing (no
        curvature update, no base step) and still returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._precondition():
            self.base_optimizer.step()
        return loss

    @_eager_under_compile
    def _precondition(self) -> bool:
        """Rescale all gradients in place; False when a non-finite gradient skips the step.

        Excluded from ``torch.compile`` tracing: a compiled training step that calls
        ``opt.step()`` runs this part eagerly (it is one kernel call) instead of graph-breaking.
        """
        plan = self._get_plan()
        if plan.pending:
            plan = self._init_pending(plan)
        if not plan.params:
            return True
        if self._kernel is not None and plan.kernel_ok:
            return self._step_kernel(plan)
        return self._step_torch(plan)

    def _hyper_rows(self, plan: _Plan) -> tuple[list[float], list[float], list[float]]:
        betas, epss, scales = [], [], []
        for group, state, gi in plan.row_specs:
            beta, eps = group[BETA_KEY], group[EPS_KEY]
            if not (0.0 <= beta < 1.0 and 0.0 < eps < math.inf):
                _check_beta(beta, BETA_KEY)
                _check_eps(eps, EPS_KEY)
            t = (plan.group_steps[gi] if state is None else state["step"]) + 1
            betas.append(beta)
            epss.append(eps)
            scales.append(1.0 / (1.0 - beta**t))
        return betas, epss, scales

    def _step_kernel(self, plan: _Plan) -> bool:
        betas, epss, scales = self._hyper_rows(plan)
        index, kind, skipped = self._kernel.grad_diff_step(
            plan.params, plan.prevs, plan.hs, plan.rows, betas, epss, scales, True
        )
        if kind == 2:
            raise RuntimeError(
                f"HessianLRAdaptation does not support sparse gradients (parameter {self._parameter_name(plan.params[index])})"
            )
        if kind == 1:
            if self.nonfinite == "skip":
                return False
            raise self._nonfinite_error(plan.params[index])
        self._count_steps(plan, skipped)
        return True

    def _count_steps(self, plan: _Plan, skipped: list[int]) -> None:
        if not skipped:
            for state in plan.states:
                state["step"] += 1
            plan.group_steps = [t + 1 for t in plan.group_steps]
            return
        skip = set(skipped)
        for i, state in enumerate(plan.states):
            if i not in skip:
                state["step"] += 1
        self._plan = None  # step counts may now differ within a group

    def _step_torch(self, plan: _Plan) -> bool:
        params = plan.params
        grads = [p.grad for p in params]
        active = [i for i, (p, g) in enumerate(zip(params, grads)) if g is not None and p.requires_grad]
        if not active:
            return True
        everyone = len(active) == len(params)
        act_grads = grads if everyone else [grads[i] for i in active]
        for i, g in zip(active, act_grads):
            if g.is_sparse:
                raise RuntimeError(
                    f"HessianLRAdaptation does not support sparse gradients (parameter {self._parameter_name(params[i])})"
                )
        bad = _first_nonfinite(act_grads)
        if bad is not None:
            if self.nonfinite == "skip":
                return False
            raise self._nonfinite_error(params[active[bad]])
        betas, epss, scales = self._hyper_rows(plan)
        # Batches that can share one estimator call: same row (group and step) and same dtypes.
        batches: dict[tuple[int, bool], list[int]] = {}
        for i in active:
            batches.setdefault((plan.rows[i], plan.same_dtype[i]), []).append(i)
        for (row, same_dtype), members in batches.items():
            group = plan.row_specs[row][0]
            beta = group[BETA_KEY]
            t_row = plan.row_specs[row]
            step = (plan.group_steps[t_row[2]] if t_row[1] is None else t_row[1]["step"]) + 1
            self.estimator.precondition_(
                [grads[i] for i in members],
                [params[i] for i in members],
                [plan.states[i] for i in members],
                beta=beta,
                eps=epss[row],
                step=step,
                foreach=same_dtype and len(members) > 1 and self.foreach is not False,
            )
        self._count_steps(plan, [] if everyone else sorted(set(range(len(params))) - set(active)))
        return True

    def backward(self, loss: Tensor, *, logits: Tensor | None = None) -> None:
        """The backward pass of a training step; use it instead of ``loss.backward()``.

        For gradient-only estimators (``grad-diff``, ``squared-grad``, ``secant*``) it is exactly
        ``loss.backward()``. Estimators that sample curvature from an extra pass take their
        sample here and release the graph before returning: ``hutchinson`` (a Hessian-vector
        product from a ``create_graph=True`` backward) and ``gauss-newton`` (a backward against
        labels sampled from ``softmax(logits)``; needs ``logits``, the tensor the loss was
        computed from). Gradients accumulate into ``p.grad`` as with ``loss.backward()``.
        """
        if type(self.estimator).backward is CurvatureEstimator.backward:  # gradient-only: the hot path
            loss.backward()
            return
        params, betas = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    params.append(p)
                    betas.append(group[BETA_KEY])
        created = False

        def state_for(param: Tensor) -> dict[str, Any]:
            nonlocal created
            state = self.state.get(param)
            if not state:
                state, created = self._new_state(param), True
            return state

        self.estimator.backward(loss, params, betas, state_for, logits=logits)
        if created:
            self._plan = None  # the cached plan listed these parameters as still without state

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
        params = [p for g in self.param_groups for p in g["params"]]
        new_state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for raw_index, saved in state_dict["state"].items():  # validate everything before loading
            index = int(raw_index)
            if not 0 <= index < len(params):
                raise ValueError(f"state_dict has state for parameter {index}, but there are {len(params)}")
            p = params[index]
            entry = {k: (v.to(device=p.device, copy=True) if isinstance(v, Tensor) else v) for k, v in saved.items()}
            if not isinstance(entry.get("step"), int) or entry["step"] < 0:
                raise ValueError(f"state_dict entry {index} needs an int 'step' >= 0")
            for key in self.estimator.state_keys:
                if key not in entry or not isinstance(entry[key], Tensor) or entry[key].shape != p.shape:
                    raise ValueError(
                        f"state_dict entry {index} needs a tensor {key!r} of shape {tuple(p.shape)} "
                        f"(estimator {self.estimator.name!r})"
                    )
            new_state[p] = entry
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.state = new_state
        self._plan = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_kernel"] = None  # a compiled module does not pickle; re-resolved on unpickling
        state["_plan"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._plan = None
        self._kernel = self._resolve_kernel()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(estimator={self.estimator!r}, beta={self.defaults[BETA_KEY]}, "
            f"eps={self.defaults[EPS_KEY]}, base={self.base_optimizer!r})"
        )
