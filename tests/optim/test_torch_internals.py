"""Pins of the torch internals ``hessian_lr.optim._torch_internals`` mirrors (see its docstring).

If one of these fails after a torch upgrade, that module needs the change, not the wrapper."""

from __future__ import annotations

import inspect

import torch
from torch.optim import Optimizer, lr_scheduler
from torch.optim import optimizer as torch_optimizer

from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim import _torch_internals as internals


def test_the_shell_sets_what_optimizer_init_sets():
    p = torch.nn.Parameter(torch.zeros(2))
    reference = torch.optim.SGD([p], lr=0.1)
    assert set(vars(reference)) - {"param_groups", "state"} == set(internals.OPTIMIZER_INIT_ATTRIBUTES)
    wrapper = HessianLRAdaptation(torch.optim.SGD([p], lr=0.1))
    for name in internals.OPTIMIZER_INIT_ATTRIBUTES:
        assert type(getattr(wrapper, name)) is type(getattr(reference, name)), name


def test_profile_hook_step_keeps_the_original_step_and_the_hook_order():
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # the first instance patches the class
    step = torch.optim.Adam.step
    assert getattr(step, "hooked", False)  # set by Optimizer._patch_step_function
    assert step.__wrapped__ is not step  # functools.wraps keeps the unhooked step
    source = inspect.getsource(Optimizer.profile_hook_step)
    order = [source.index(s) for s in (
        "_global_optimizer_pre_hooks", "_optimizer_step_pre_hooks", "func(*args, **kwargs)",
        "_optimizer_step_code()", "_optimizer_step_post_hooks", "_global_optimizer_post_hooks",
    )]
    assert order == sorted(order)
    assert hasattr(torch_optimizer, "_global_optimizer_pre_hooks")


def test_state_dict_hook_conventions():
    """Both methods run their pre and post hook tables, and a hook's non-None result replaces the
    dict; load_state_dict works on a shallow copy."""
    hook_tables = {
        Optimizer.state_dict: ("_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks"),
        Optimizer.load_state_dict: ("_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks"),
    }
    for method, tables in hook_tables.items():
        source = inspect.getsource(method)
        assert all(table in source for table in tables)
        assert "hook_result is not None" in source
    assert "state_dict = state_dict.copy()" in inspect.getsource(Optimizer.load_state_dict)


def test_lr_scheduler_tracks_optimizer_steps_with_opt_called():
    source = inspect.getsource(lr_scheduler.LRScheduler)
    assert "opt._opt_called = True" in source and '"_opt_called"' in source
