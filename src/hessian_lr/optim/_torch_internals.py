"""Every place the wrapper depends on ``torch.optim`` internals, in one module.

``HessianLRAdaptation`` is a ``torch.optim.Optimizer`` that does not own its parameter groups (it
shares the base optimizer's), so it cannot run ``Optimizer.__init__``; and it must drive the base
optimizer's ``step`` without firing torch's *global* step hooks a second time. Both need details of
``torch/optim/optimizer.py`` that are not public API. They live here, each with the torch source it
mirrors, and ``tests/optim/test_torch_internals.py`` pins them against the installed torch: if a
torch release changes one of them, that test fails and names it.

Mirrored from torch 2.13 (``torch/optim/optimizer.py``, ``torch/optim/lr_scheduler.py``):

* ``Optimizer.__init__``: ``defaults``, six ``OrderedDict`` hook tables, ``_patch_step_function()``
  (which wraps the class's ``step`` in ``Optimizer.profile_hook_step`` and marks it ``hooked``) and
  ``_warned_capturable_if_run_uncaptured``;
* ``Optimizer.profile_hook_step``: global pre hooks, instance pre hooks, ``step``,
  ``_optimizer_step_code()``, instance post hooks, global post hooks, inside a
  ``record_function("Optimizer.step#<class>.step")``;
* ``Optimizer.state_dict`` / ``load_state_dict``: the four state-dict hook tables and their calling
  conventions (a post hook or a load pre hook may return a replacement dict; load works on a
  shallow copy of the dict it was given);
* ``LRScheduler``: a scheduler wraps its optimizer's ``step`` to set ``optimizer._opt_called``,
  and warns on its first ``step()`` if that flag is missing.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = [
    "OPTIMIZER_INIT_ATTRIBUTES",
    "init_optimizer_shell",
    "step_without_global_hooks",
    "state_dict_with_hooks",
    "load_state_dict_with_hooks",
]

# The attributes Optimizer.__init__ sets, other than "param_groups" and "state" (the test pins this
# list against a freshly built torch optimizer).
OPTIMIZER_INIT_ATTRIBUTES = (
    "defaults",
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
    "_zero_grad_profile_name",  # set by _patch_step_function
    "_warned_capturable_if_run_uncaptured",
)


def init_optimizer_shell(optimizer: Optimizer, defaults: dict[str, Any]) -> None:
    """What ``Optimizer.__init__`` does, minus building parameter groups and state.

    The caller provides ``param_groups`` and ``state`` itself (the wrapper shares the base
    optimizer's groups, which ``Optimizer.__init__`` would copy).
    """
    optimizer.defaults = defaults
    optimizer._optimizer_step_pre_hooks = OrderedDict()
    optimizer._optimizer_step_post_hooks = OrderedDict()
    optimizer._optimizer_state_dict_pre_hooks = OrderedDict()
    optimizer._optimizer_state_dict_post_hooks = OrderedDict()
    optimizer._optimizer_load_state_dict_pre_hooks = OrderedDict()
    optimizer._optimizer_load_state_dict_post_hooks = OrderedDict()
    optimizer._patch_step_function()  # wraps type(optimizer).step with the hook runner, once per class
    optimizer._warned_capturable_if_run_uncaptured = True


def _unhooked_step(optimizer: Optimizer) -> Callable[..., Any]:
    """The class's ``step`` without ``Optimizer.profile_hook_step`` around it (bound to ``optimizer``)."""
    step = type(optimizer).step
    if getattr(step, "hooked", False):  # profile_hook_step's functools.wraps keeps the original here
        step = step.__wrapped__
    return functools.partial(step, optimizer)


def step_without_global_hooks(optimizer: Optimizer) -> Any:
    """``optimizer.step()`` with its own step hooks but not torch's global ones.

    The wrapper's own ``step`` already ran the global hooks (``register_optimizer_step_pre_hook``),
    once per user step; running the inner optimizer's class step directly keeps them from firing
    again for the base. The base's instance hooks still run, in torch's order. A scheduler attached
    to the base wraps ``base.step`` on the instance, which this bypasses, so the flag it would set
    is set here (without it the scheduler warns that it stepped before its optimizer).
    """
    label = f"Optimizer.step#{type(optimizer).__name__}.step"
    with torch.autograd.profiler.record_function(label):
        for pre_hook in optimizer._optimizer_step_pre_hooks.values():
            pre_hook(optimizer, (), {})
        out = _unhooked_step(optimizer)()
        optimizer._optimizer_step_code()
        for post_hook in optimizer._optimizer_step_post_hooks.values():
            post_hook(optimizer, (), {})
    optimizer._opt_called = True  # what LRScheduler's wrapper of optimizer.step records
    return out


def state_dict_with_hooks(optimizer: Optimizer, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``build()`` between the optimizer's state-dict pre and post hooks, as ``Optimizer.state_dict``."""
    for pre_hook in optimizer._optimizer_state_dict_pre_hooks.values():
        pre_hook(optimizer)
    state_dict = build()
    for post_hook in optimizer._optimizer_state_dict_post_hooks.values():
        result = post_hook(optimizer, state_dict)
        if result is not None:
            state_dict = result
    return state_dict


def load_state_dict_with_hooks(
    optimizer: Optimizer, state_dict: dict[str, Any], load: Callable[[dict[str, Any]], None]
) -> None:
    """``load(state_dict)`` between the load pre and post hooks, as ``Optimizer.load_state_dict``:
    the pre hooks see a shallow copy of the caller's dict and may return a replacement."""
    state_dict = state_dict.copy()
    for pre_hook in optimizer._optimizer_load_state_dict_pre_hooks.values():
        result = pre_hook(optimizer, state_dict)
        if result is not None:
            state_dict = result
    load(state_dict)
    for post_hook in optimizer._optimizer_load_state_dict_post_hooks.values():
        post_hook(optimizer)
