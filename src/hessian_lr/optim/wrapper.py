"""``HessianLRAdaptation``: curvature-adaptive gradient rescaling in front of any torch optimizer."""

from __future__ import annotations

import functools
import math
import sys
from collections import defaultdict
from collections.abc import Callable
from itertools import chain
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from hessian_lr.optim import _torch_internals as internals
from hessian_lr.optim import autotune
from hessian_lr.optim import functional as F
from hessian_lr.optim._views import View, agree_on_first_nonfinite, device_meshes, state_target, to_view, view_of
from hessian_lr.optim.estimators import CurvatureEstimator, GradDiff, get_estimator

__all__ = ["HessianLRAdaptation"]

# Keys the wrapper adds to each of the base optimizer's param groups. Namespaced, because base
# optimizers already use "eps" (Adam) or "beta" (some pytorch-optimizer classes).
BETA_KEY = "curvature_beta"
EPS_KEY = "curvature_eps"
# State-dict keys: the wrapper's per-parameter state sits next to the base optimizer's under this
# key, and every saved param group records the estimator under ESTIMATOR_KEY.
CURVATURE_KEY = "curvature"
ESTIMATOR_KEY = "curvature_estimator"
NONFINITE_POLICIES = ("error", "skip")
# Methods of the base optimizer the wrapper forwards (see HessianLRAdaptation.__getattr__).
FORWARDED_METHODS = frozenset({"train", "eval"})
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_beta(beta: float, name: str = "beta") -> None:
    if isinstance(beta, bool) or not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {beta!r}")


def _check_eps(eps: float, name: str = "eps") -> None:
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and eps > 0.0 and math.isfinite(eps)):
        raise ValueError(f"{name} must be a finite number > 0, i.e. in (0, inf), got {eps!r}")


def _eager_under_compile(method: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compiler.disable(method)`` while dynamo traces, the plain method otherwise.

    Applying ``torch.compiler.disable`` at class definition imports ``torch._dynamo`` (~1.2 s), a
    cost every process importing this module would pay; and calling through it costs ~5 us per
    call in eager code. Nothing can be compiling before dynamo is imported, and while dynamo traces
    this wrapper ``is_compiling()`` is True, so the disabled method is only reached then.
    """
    disabled: Callable[..., Any] | None = None

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal disabled
        if "torch._dynamo" not in sys.modules or not torch.compiler.is_compiling():
            return method(*args, **kwargs)
        if disabled is None:
            disabled = torch.compiler.disable(method)
        return disabled(*args, **kwargs)

    return call


class _Plan:
    """Per-step lists, cached until the parameter set or the state changes.

    ``params`` / ``states`` cover every parameter that has state, in group order; ``pending`` holds
    those still without state. Hyperparameter rows: one per group whose parameters share a step
    count (``group_steps[gi]``), else one per parameter (``row_specs`` entries ``(group, state or
    None, group index)``); ``rows[i]`` is parameter i's row.

    For the grad-diff estimator (``fast``) it also holds, per parameter: ``prevs`` / ``hs``, the
    state as the math sees it (local shard, real view); ``swap_buffers``, the tensor that stands in
    for ``p.grad`` during the base step (``prev_grad`` itself, which receives the rescaled
    gradient, or None where its dtype differs from the gradient's); and ``implementations``.
    """

    __slots__ = (
        "key", "params", "states", "pending", "rows", "row_specs", "group_steps", "views", "all_plain",
        "same_dtype", "meshes", "fast", "prevs", "hs", "swap_buffers", "all_swap", "implementations",
    )

    def __init__(self, opt: HessianLRAdaptation) -> None:
        groups = opt.param_groups
        self.key = self._key(groups)
        self.params: list[Tensor] = []
        self.states: list[dict[str, Any]] = []
        self.pending: list[Tensor] = []
        self.rows: list[int] = []
        self.row_specs: list[tuple[dict[str, Any], dict[str, Any] | None, int]] = []
        self.group_steps: list[int] = []
        for gi, group in enumerate(groups):
            members = []
            for p in group["params"]:
                state = opt.state.get(p)
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
        keys = opt.estimator.state_keys
        self.views = [view_of(p) for p in self.params]
        self.all_plain = all(v is View.PLAIN for v in self.views)
        self.same_dtype = [all(s[k].dtype == state_target(p).dtype for k in keys) for p, s in zip(self.params, self.states)]
        self.meshes = device_meshes(self.params)
        self.fast = type(opt.estimator) is GradDiff
        self.prevs: list[Tensor] = []
        self.hs: list[Tensor] = []
        self.swap_buffers: list[Tensor | None] = []
        self.implementations: list[F.Implementation] = []
        if self.fast:
            for p, state, view in zip(self.params, self.states, self.views):
                state_view = View.LOCAL if view is View.LOCAL else View.PLAIN
                self.prevs.append(to_view(state["prev_grad"], state_view))
                self.hs.append(to_view(state["h"], state_view))
                self.swap_buffers.append(self._swap_buffer(p, state["prev_grad"]))
                device_type = self.prevs[-1].device.type
                self.implementations.append(
                    F.choose_implementation(device_type, fused=opt.fused, foreach=opt.foreach, kernel=opt._kernel)
                )
            self._measure_where_asked()
        self.all_swap = all(b is not None for b in self.swap_buffers)

    def _measure_where_asked(self) -> None:
        """Replace ``AUTOTUNE`` entries by the implementation measured faster for the tensors of
        each device (:func:`hessian_lr.optim.autotune.fastest`, cached per parameter set)."""
        by_device: dict[torch.device, list[int]] = {}
        for i, impl in enumerate(self.implementations):
            if impl is F.Implementation.AUTOTUNE:
                by_device.setdefault(self.prevs[i].device, []).append(i)
        for members in by_device.values():
            rows = [self.rows[i] for i in members]
            chosen = autotune.fastest(
                [self.prevs[i] for i in members], [self.hs[i] for i in members],
                [state_target(self.params[i]).dtype for i in members],
                rows=rows, n_rows=len(self.row_specs), into_prev=[self.swap_buffers[i] is not None for i in members],
            )
            for i in members:
                self.implementations[i] = chosen

    @staticmethod
    def _swap_buffer(param: Tensor, prev_grad: Tensor) -> Tensor | None:
        """``prev_grad`` as a gradient of ``param`` (its complex view for a complex parameter), or
        None when it cannot be one (a wider state dtype than the parameter's)."""
        if prev_grad.dtype != state_target(param).dtype:
            return None
        return torch.view_as_complex(prev_grad) if param.is_complex() else prev_grad

    @staticmethod
    def _key(groups: list[dict[str, Any]]) -> tuple:
        return tuple((id(g["params"]), len(g["params"])) for g in groups)

    def matches(self, groups: list[dict[str, Any]]) -> bool:
        return self.key == self._key(groups)


class _GradientExchange:
    """What ``p.grad`` holds during the base step, and how it is put back.

    The base optimizer reads the rescaled gradients from ``buffers`` (swapped into ``p.grad``);
    afterwards every ``p.grad`` is the user's gradient tensor again, never written. Where a buffer
    is the parameter's ``prev_grad`` (grad-diff), ``g_t`` is copied back into it from the user's
    gradient (``refill``), which is what the next step's difference needs.
    """

    __slots__ = ("params", "grads", "buffers", "refill_prevs", "refill_grads", "kernel")

    def __init__(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        buffers: list[Tensor],
        refill_prevs: list[Tensor] = (),  # type: ignore[assignment]
        refill_grads: list[Tensor] = (),  # type: ignore[assignment]
        kernel: Any = None,
    ) -> None:
        self.params: list[Tensor] = params
        self.grads: list[Tensor] = grads
        self.buffers: list[Tensor] = buffers
        self.refill_prevs: list[Tensor] = list(refill_prevs)
        self.refill_grads: list[Tensor] = list(refill_grads)
        self.kernel = kernel

    @_eager_under_compile
    def install(self) -> None:
        for p, buffer in zip(self.params, self.buffers):
            p.grad = buffer

    @_eager_under_compile
    def restore(self) -> None:
        for p, grad in zip(self.params, self.grads):
            p.grad = grad
        if self.refill_prevs:
            F.refill_prev_grads_(self.refill_prevs, self.refill_grads, kernel=self.kernel)


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

    The base optimizer steps on the rescaled gradients, but ``step()`` never writes ``p.grad``:
    during the base step ``p.grad`` is a buffer holding the rescaled gradient (for grad-diff the
    buffer of ``prev_grad``, which gets ``g_t`` back afterwards: no extra memory), and afterwards
    it is the user's gradient tensor again, unchanged (torch's contract for optimizers).

    The wrapper shares the base optimizer's ``param_groups`` list (LR schedulers attached to it act
    on the base) and adds ``curvature_beta`` / ``curvature_eps`` to each group, so they can differ
    per group; ``train()`` / ``eval()`` are the base's, where it has them (schedule-free
    optimizers). ``state[p]`` holds ``step`` (int) and the estimator's tensors (for grad-diff
    ``prev_grad`` -- a copy of the last gradient, never an alias of ``p.grad`` -- and ``h``):
    exactly two persistent tensors per parameter, and no model-sized temporaries per step.
    A complex parameter is treated as its real view (as torch's optimizers do: it trains exactly
    like its ``view_as_real`` twin; its state has the real view's shape). A DTensor parameter
    (FSDP2) is updated through its local shard; the ranks agree on inf/NaN checks.

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
        state_dtype: dtype of the estimator's state. ``None`` keeps the parameter's (real) dtype,
            but uses float32 for float16/bfloat16 parameters. ``load_state_dict`` keeps the dtype
            the state was saved in (never a silent downcast).
        foreach: the eager path's form: ``_foreach_`` ops (``None``: whenever the tensors allow
            it; ``True`` also pins the eager path where ``fused=None`` would measure; ``False``:
            one tensor at a time).
        fused: which implementation of the grad-diff step runs
            (:func:`hessian_lr.optim.functional.choose_implementation` has the rule). ``None``
            (default): the fastest -- for CPU tensors the compiled C++ kernel
            (:mod:`hessian_lr.optim.kernel`; built once per machine at the first step that needs
            it, ~40 s, announced in one log line, unless ``HESSIAN_LR_KERNEL=prebuilt|never``;
            the eager ops where it cannot be built), for tensors on other devices whichever of
            the ``torch.compile``-d function and the eager ops measures faster there
            (:mod:`hessian_lr.optim.autotune`, once per parameter set and process); ``True``:
            one pass over memory everywhere (the kernel for CPU tensors, built now if needed; the
            compiled function for the rest, and for all if the kernel cannot be built);
            ``False``: eager ``_foreach_`` ops only. All agree to float tolerance; the kernel and
            the eager ops bit for bit.
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
        internals.init_optimizer_shell(self, {**base_optimizer.defaults, BETA_KEY: beta, EPS_KEY: eps})
        self.base_optimizer = base_optimizer
        self.estimator = get_estimator(estimator)
        self.nonfinite = nonfinite
        self.state_dtype = state_dtype
        self.foreach = foreach
        self.fused = fused
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for group in self.param_groups:
            self._set_group_defaults(group)
        self._plan: _Plan | None = None
        self._kernel = self._resolve_kernel()

    def _resolve_kernel(self) -> Any:
        """The compiled grad-diff kernel when the estimator is grad-diff and ``fused`` allows it.

        ``fused=True`` builds it now if needed; with ``fused=None`` a built kernel is loaded now
        and a missing one is built at the first step that has CPU tensors (:meth:`_build_kernel`),
        so a wrapper of a CUDA model never builds the CPU kernel.
        """
        self._kernel_deferred = False
        if type(self.estimator) is not GradDiff:
            if self.fused:
                raise ValueError(f"fused=True needs the grad-diff estimator, not {self.estimator!r}")
            return None
        if self.fused is False:
            return None
        from hessian_lr.optim import kernel

        module = kernel.load(compile=True if self.fused else False)
        self._kernel_deferred = module is None and self.fused is None and kernel.mode() == "auto"
        return module

    def _build_kernel(self) -> None:
        """The deferred kernel build (``fused=None``) once the parameters include CPU tensors."""
        devices = {to_view(p, view_of(p)).device.type for group in self.param_groups for p in group["params"]}
        if "cpu" in devices:
            from hessian_lr.optim import kernel

            self._kernel_deferred = False
            self._kernel = kernel.load()

    @property
    def uses_fused_kernel(self) -> bool:
        """Whether :meth:`step` runs the compiled C++ kernel (for CPU tensors; asking builds a
        deferred kernel, as the first step would)."""
        if self._kernel_deferred:
            self._build_kernel()
        return self._kernel is not None

    @property
    def implementations(self) -> frozenset[str]:
        """The implementations :meth:`step` uses for the current parameters (see
        :func:`hessian_lr.optim.functional.choose_implementation`); ``{"estimator"}`` for
        estimators other than grad-diff, which run their own ``precondition_``. Before the first
        step, ``"autotune"`` stands for a choice the first step measures (non-CPU devices)."""
        if type(self.estimator) is not GradDiff:
            return frozenset({"estimator"})
        if self._kernel_deferred:
            self._build_kernel()
        plan = self._plan
        chosen = {id(p): impl for p, impl in zip(plan.params, plan.implementations)} if plan is not None else {}
        return frozenset(
            (chosen.get(id(p)) or F.choose_implementation(
                to_view(p, view_of(p)).device.type, fused=self.fused, foreach=self.foreach, kernel=self._kernel
            )).value
            for group in self.param_groups
            for p in group["params"]
        )

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
        for p in group["params"]:
            view_of(p)  # refuses parameters the optimizer cannot handle, when they are added

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

    def __getattr__(self, name: str) -> Any:
        """The base optimizer's ``train`` / ``eval`` where it has them: schedule-free optimizers
        move their parameters between the point they train at and the averaged point they are
        evaluated at, and a training loop calls these on the optimizer it holds. Absent (an
        AttributeError, so ``hasattr`` tells) when the base has none."""
        if name in FORWARDED_METHODS:
            method = getattr(self.__dict__.get("base_optimizer"), name, None)
            if callable(method):
                return method
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- the step ------------------------------------------------------------------------
    def _new_state(self, param: Tensor) -> dict[str, Any]:
        target = state_target(param)
        dtype = self.state_dtype or (torch.float32 if target.dtype in LOW_PRECISION else target.dtype)
        state: dict[str, Any] = {"step": 0}
        state.update(self.estimator.init(target, dtype))
        self.state[param] = state
        return state

    def _current_plan(self) -> _Plan:
        """The cached plan, after refusing sparse gradients and creating the state of parameters
        that got their first gradient (nothing is allocated before a step is known to be valid)."""
        groups = self.param_groups
        plan = self._plan
        if plan is None or not plan.matches(groups):
            if self._kernel_deferred:
                self._build_kernel()
            for group in groups:  # groups added to the base optimizer directly get the defaults too
                if BETA_KEY not in group or EPS_KEY not in group:
                    self._set_group_defaults(group)
            plan = self._plan = _Plan(self)
        for p in chain(plan.params, plan.pending):
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError(
                    f"HessianLRAdaptation does not support sparse gradients (parameter {self._parameter_name(p)})"
                )
        fresh = [p for p in plan.pending if p.grad is not None and p.requires_grad]
        if fresh:
            for p in fresh:
                self._new_state(p)
            plan = self._plan = _Plan(self)
        return plan

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

        ``p.grad`` is left as it was. With ``nonfinite="skip"`` a step that finds inf/NaN in a
        gradient changes nothing (no curvature update, no base step) and still returns the loss.
        Global optimizer hooks (``torch.optim.optimizer.register_optimizer_step_pre_hook``) see
        this wrapper once per step; the base optimizer's own step hooks run around its step.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        exchange = self._precondition()
        if exchange is None:
            return loss
        exchange.install()
        try:
            internals.step_without_global_hooks(self.base_optimizer)
        finally:
            exchange.restore()
        return loss

    @_eager_under_compile
    def _precondition(self) -> _GradientExchange | None:
        """Update the curvature state and compute the rescaled gradients; None when a non-finite
        gradient skips the step (``nonfinite="skip"``), with nothing changed.

        Excluded from ``torch.compile`` tracing: a compiled training step that calls
        ``opt.step()`` runs this part eagerly (one kernel call) instead of graph-breaking.
        """
        plan = self._current_plan()
        params = plan.params
        grads = [p.grad for p in params]
        active = [i for i, (p, g) in enumerate(zip(params, grads)) if g is not None and p.requires_grad]
        if not active:
            return _GradientExchange([], [], [])
        everyone = len(active) == len(params)
        grads = grads if everyone else [grads[i] for i in active]
        views = plan.views
        work = grads if plan.all_plain else [to_view(g, views[i]) for i, g in zip(active, grads)]
        bad = F.first_nonfinite(work, kernel=self._kernel)
        bad = agree_on_first_nonfinite(bad, len(active), plan.meshes)
        if bad is not None:
            if self.nonfinite == "skip":
                return None
            raise self._nonfinite_error(params[active[bad]])
        rows = self._hyper_rows(plan)
        if plan.fast:
            exchange = self._grad_diff_step(plan, active, everyone, grads, work, rows)
        else:
            exchange = self._estimator_step(plan, active, grads, rows)
        self._count_steps(plan, active, everyone)
        return exchange

    def _hyper_rows(self, plan: _Plan) -> list[F.Hyper]:
        """``(beta, eps, t)`` per hyperparameter row, ``t`` the 1-based step being taken."""
        rows = []
        for group, state, gi in plan.row_specs:
            beta, eps = group[BETA_KEY], group[EPS_KEY]
            if not (0.0 <= beta < 1.0 and 0.0 < eps < math.inf):  # set behind the wrapper's back
                _check_beta(beta, BETA_KEY)
                _check_eps(eps, EPS_KEY)
            rows.append((beta, eps, (plan.group_steps[gi] if state is None else state["step"]) + 1))
        return rows

    def _grad_diff_step(
        self,
        plan: _Plan,
        active: list[int],
        everyone: bool,
        grads: list[Tensor],
        work: list[Tensor],
        rows: list[F.Hyper],
    ) -> _GradientExchange:
        """The grad-diff update through :func:`hessian_lr.optim.functional.grad_diff_`.

        Where ``prev_grad`` can stand in for the gradient (same dtype) the rescaled gradient goes
        into it (``into_prev``) and ``g_t`` is copied back after the base step; elsewhere (wider
        state than the parameter) a copy of the gradient is rescaled in place.
        """
        if everyone and plan.all_swap:  # the common case, without per-tensor branching
            prevs, hs, buffers, implementations = plan.prevs, plan.hs, plan.swap_buffers, plan.implementations
            row_of, into_prev, targets, refill = plan.rows, [True] * len(active), work, (prevs, work)
        else:
            prevs, hs, buffers, implementations, into_prev, targets = [], [], [], [], [], []
            row_of, refill = [plan.rows[i] for i in active], ([], [])
            for i, grad, grad_view in zip(active, grads, work):
                buffer = plan.swap_buffers[i]
                if buffer is None:
                    buffer = grad.clone()
                    grad_view = to_view(buffer, plan.views[i])
                else:
                    refill[0].append(plan.prevs[i])
                    refill[1].append(grad_view)
                prevs.append(plan.prevs[i])
                hs.append(plan.hs[i])
                buffers.append(buffer)
                implementations.append(plan.implementations[i])
                into_prev.append(plan.swap_buffers[i] is not None)
                targets.append(grad_view)
        F.grad_diff_(
            targets, prevs, hs, rows=row_of, hyper=rows, into_prev=into_prev, implementations=implementations,
            kernel=self._kernel,
        )
        params = plan.params if everyone else [plan.params[i] for i in active]
        return _GradientExchange(params, grads, buffers, *refill, kernel=self._kernel)

    def _estimator_step(
        self, plan: _Plan, active: list[int], grads: list[Tensor], rows: list[F.Hyper]
    ) -> _GradientExchange:
        """Any other estimator: its ``precondition_`` rescales copies of the gradients, batched by
        hyperparameter row and dtype."""
        buffers = [g.clone() for g in grads]
        batches: dict[tuple[int, bool], list[int]] = {}
        for k, i in enumerate(active):
            batches.setdefault((plan.rows[i], plan.same_dtype[i]), []).append(k)
        for (row, same_dtype), members in batches.items():
            beta, eps, step = rows[row]
            real = [plan.views[active[k]] is View.REAL for k in members]
            self.estimator.precondition_(
                [to_view(buffers[k], View.REAL) if r else buffers[k] for k, r in zip(members, real)],
                [state_target(plan.params[active[k]]) for k in members],
                [plan.states[active[k]] for k in members],
                beta=beta,
                eps=eps,
                step=step,
                foreach=same_dtype and len(members) > 1 and self.foreach is not False,
            )
        return _GradientExchange([plan.params[i] for i in active], grads, buffers)

    def _count_steps(self, plan: _Plan, active: list[int], everyone: bool) -> None:
        if everyone:
            for state in plan.states:
                state["step"] += 1
            plan.group_steps = [t + 1 for t in plan.group_steps]
            return
        for i in active:
            plan.states[i]["step"] += 1
        self._plan = None  # step counts may now differ within a group

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
        """The current bias-corrected curvature estimate of ``param`` (None before its first step;
        shaped like ``torch.view_as_real(param)`` for a complex parameter)."""
        state = self.state.get(param)
        if not state:
            return None
        group = next(g for g in self.param_groups if any(p is param for p in g["params"]))
        return self.estimator.estimate(state, beta=group[BETA_KEY], step=state["step"])

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The base optimizer's state dict with the wrapper's state added, in torch's layout.

        ``{"state": {index: {**base state, "curvature": {"step", <estimator tensors>}}},
        "param_groups": [{**base group, "curvature_estimator": {"name", "options", "state"}}]}``:
        parameters are indexed as torch does (in order through the groups), so
        ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` and DCP save it like
        any optimizer's. The wrapper's tensors are copies (a snapshot); the base's are whatever its
        ``state_dict()`` returns. The state-dict hooks registered on the wrapper run as on torch's
        optimizers (the base optimizer's own hooks run inside).
        """
        return internals.state_dict_with_hooks(self, self._build_state_dict)

    def _param_index(self) -> dict[int, int]:
        """``id(param) -> index`` as ``Optimizer.state_dict`` numbers parameters."""
        index: dict[int, int] = {}
        start = 0
        for group in self.param_groups:
            index.update({id(p): i for i, p in enumerate(group["params"], start) if id(p) not in index})
            start += len(group["params"])
        return index

    def _build_state_dict(self) -> dict[str, Any]:
        base = self.base_optimizer.state_dict()
        state = {key: dict(entry) if isinstance(entry, dict) else entry for key, entry in base["state"].items()}
        index = self._param_index()
        for p, entry in self.state.items():
            if not isinstance(p, Tensor):  # non-parameter keys are kept as they are, as torch does
                state[p] = entry
            elif entry:
                ours = {k: v.clone() if isinstance(v, Tensor) else v for k, v in entry.items()}
                state.setdefault(index[id(p)], {})[CURVATURE_KEY] = ours
        record = {**self.estimator.spec(), "state": self.estimator.state_dict()}
        groups = [{**group, ESTIMATOR_KEY: dict(record)} for group in base["param_groups"]]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore both optimizers from :meth:`state_dict`'s layout (or this wrapper's older
        ``{"state", "param_groups", "base"}`` layout).

        Everything is validated before anything is loaded. A state dict of another estimator, or
        of the same with other options, is refused; so is a bare base optimizer's (load that into
        ``base_optimizer``). Tensors move to their parameter's device but keep their dtype. The
        load hooks registered on the wrapper run as on torch's optimizers.
        """
        if not isinstance(state_dict, dict):
            raise ValueError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        internals.load_state_dict_with_hooks(self, state_dict, self._load_state_dict)

    def _load_state_dict(self, state_dict: dict[str, Any]) -> None:
        legacy = "base" in state_dict
        if legacy:
            state_dict = _from_separate_base_layout(state_dict)
        if "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict is not a HessianLRAdaptation state dict (needs 'state' and 'param_groups')")
        saved_groups = state_dict["param_groups"]
        groups = self.param_groups
        if len(saved_groups) != len(groups) or any(
            len(saved["params"]) != len(group["params"]) for saved, group in zip(saved_groups, groups)
        ):
            raise ValueError("state_dict's parameter groups do not match this optimizer's (number or sizes)")
        record = None if legacy else self._check_estimator_record(saved_groups)
        id_map = dict(zip(chain.from_iterable(g["params"] for g in saved_groups),
                          chain.from_iterable(g["params"] for g in groups)))
        base_state: dict[Any, Any] = {}
        new_state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for key, entry in state_dict["state"].items():
            if key not in id_map or not isinstance(entry, dict):
                base_state[key] = entry
                continue
            rest = {k: v for k, v in entry.items() if k != CURVATURE_KEY}
            if rest:
                base_state[key] = rest
            if CURVATURE_KEY in entry:
                param = id_map[key]
                new_state[param] = self._loaded_entry(key, param, entry[CURVATURE_KEY])
        base_groups = [{k: v for k, v in g.items() if k != ESTIMATOR_KEY} for g in saved_groups]
        self.base_optimizer.load_state_dict({"state": base_state, "param_groups": base_groups})
        self.state = new_state
        if record is not None:
            self.estimator.load_state_dict(record.get("state") or {})
        self._plan = None

    def _check_estimator_record(self, saved_groups: list[dict[str, Any]]) -> dict[str, Any]:
        records = [g.get(ESTIMATOR_KEY) for g in saved_groups]
        if any(not isinstance(r, dict) for r in records):
            raise ValueError(
                "state_dict is not a HessianLRAdaptation state dict: its param groups carry no "
                f"{ESTIMATOR_KEY!r} record (a bare base optimizer's state dict? load it into "
                "opt.base_optimizer; the curvature estimate then starts afresh)"
            )
        ours = self.estimator.spec()
        for record in records:
            saved = {"name": record.get("name"), "options": record.get("options")}
            if saved != ours:
                raise ValueError(
                    f"state_dict was saved with estimator {saved['name']!r} {saved['options']}, but this "
                    f"optimizer uses {ours['name']!r} {ours['options']}; their states do not mean the same"
                )
        return records[0]

    def _loaded_entry(self, key: Any, param: Tensor, saved: dict[str, Any]) -> dict[str, Any]:
        """A validated copy of one saved entry, tensors on ``param``'s device in their saved dtype."""
        if not isinstance(saved, dict):
            raise ValueError(f"state_dict entry {key!r} has a {CURVATURE_KEY!r} that is not a dict")
        entry = {k: (_copy_to(v, param) if isinstance(v, Tensor) else v) for k, v in saved.items()}
        if isinstance(entry.get("step"), bool) or not isinstance(entry.get("step"), int) or entry["step"] < 0:
            raise ValueError(f"state_dict entry {key!r} needs an int 'step' >= 0")
        shape = tuple(state_target(param).shape)
        for name in self.estimator.state_keys:
            value = entry.get(name)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                raise ValueError(
                    f"state_dict entry {key!r} needs a tensor {name!r} of shape {shape} "
                    f"(estimator {self.estimator.name!r})"
                )
        return entry

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


def _copy_to(value: Tensor, param: Tensor) -> Tensor:
    """A copy of ``value`` on ``param``'s device, in ``value``'s dtype (a DTensor stays one)."""
    if value.device == param.device:
        return value.detach().clone()
    return value.to(device=param.device)


def _from_separate_base_layout(state_dict: dict[str, Any]) -> dict[str, Any]:
    """The layout before the wrapper's state joined the base's entries: ``{"state": {index:
    ours}, "param_groups", "base": base.state_dict()}`` -> the current one (without a record)."""
    base = state_dict["base"]
    if not isinstance(base, dict) or "state" not in base or "param_groups" not in base or "state" not in state_dict:
        raise ValueError("state_dict is not a HessianLRAdaptation state dict ('base' is not a state dict)")
    state = {key: dict(entry) if isinstance(entry, dict) else entry for key, entry in base["state"].items()}
    for raw_index, ours in state_dict["state"].items():
        state.setdefault(int(raw_index), {})[CURVATURE_KEY] = ours
    return {"state": state, "param_groups": base["param_groups"]}

