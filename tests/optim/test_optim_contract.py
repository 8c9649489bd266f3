"""The torch.optim.Optimizer contract: type, schedulers, groups, closure, errors, skipped params."""

from __future__ import annotations

import math

import pytest
import torch
from optim_helpers import assert_same, loss_fn, mlp, params_of, reference_train, train

from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim import functional as F


def test_is_an_optimizer_sharing_the_base_groups(path):
    model = mlp()
    base = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt = HessianLRAdaptation(base, fused=path == "kernel")
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is base.param_groups
    assert opt.defaults["lr"] == 1e-3 and opt.defaults["curvature_beta"] == 0.99
    assert opt.uses_fused_kernel == (path == "kernel")


def test_matches_the_reference_definition(path):
    a, b = mlp(), mlp()
    opt = HessianLRAdaptation(torch.optim.Adam(a.parameters(), lr=1e-2), beta=0.9, eps=1e-6, fused=path == "kernel")
    train(a, opt, 6)
    reference_train(b, torch.optim.Adam(b.parameters(), lr=1e-2), 6, beta=0.9, eps=1e-6)
    assert_same(params_of(a), params_of(b))


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1.0 / (1 + t)),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=0),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_schedulers_drive_the_base_lr(name):
    """A scheduler on the wrapper gives the lr sequence it gives on the bare base optimizer, and
    the base step uses it: with SGD, every update is exactly -lr * (rescaled gradient)."""
    model = mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt = HessianLRAdaptation(base)
    sched = SCHEDULERS[name](opt)
    twin = torch.optim.SGD(mlp().parameters(), lr=0.05, momentum=0.9)
    twin_sched = SCHEDULERS[name](twin)
    lrs = []
    for t in range(6):
        opt.zero_grad()
        loss = loss_fn(model, t)
        loss.backward()
        opt.step()
        twin.step()
        lrs.append(base.param_groups[0]["lr"])
        assert lrs[-1] == twin.param_groups[0]["lr"]
        if name == "ReduceLROnPlateau":
            sched.step(1.0)
            twin_sched.step(1.0)
        else:
            sched.step()
            twin_sched.step()
    assert len(set(lrs)) > 1, f"{name} did not change the lr: {lrs}"

    # The lr actually used: plain SGD on the wrapper, one step at the scheduled lr.
    p = torch.nn.Parameter(torch.zeros(3))
    sgd = torch.optim.SGD([p], lr=1.0)
    wrapped = HessianLRAdaptation(sgd, beta=0.5, eps=7.0)
    step_lr = torch.optim.lr_scheduler.StepLR(wrapped, step_size=1, gamma=0.25)
    p.grad = torch.full((3,), 3.0)
    wrapped.step()
    step_lr.step()
    assert p.tolist() == [-0.75] * 3  # lr 1: 3/sqrt(9 + 7)
    p.grad = torch.full((3,), 6.0)
    wrapped.step()
    assert p.tolist() == [-0.75 - 0.25 * 1.5] * 3  # lr 0.25: 6/sqrt(9 + 7)


def test_per_group_hyperparameters_and_add_param_group(path):
    model = mlp()
    first, second, third = model[0], model[2], model[4]
    base = torch.optim.SGD(
        [{"params": first.parameters(), "lr": 0.1}, {"params": second.parameters(), "lr": 0.01, "curvature_beta": 0.5}],
        lr=0.05,
    )
    opt = HessianLRAdaptation(base, beta=0.9, eps=1e-6, fused=path == "kernel")
    opt.add_param_group({"params": third.parameters(), "lr": 0.2, "curvature_eps": 1e-3})
    assert len(base.param_groups) == 3
    assert [g["curvature_beta"] for g in base.param_groups] == [0.9, 0.5, 0.9]
    assert [g["curvature_eps"] for g in base.param_groups] == [1e-6, 1e-6, 1e-3]
    for g in base.param_groups:
        opt_keys = set(g)
        assert {"lr", "momentum", "curvature_beta", "curvature_eps"} <= opt_keys

    ref_model = mlp()
    hyper = [(0.9, 1e-6, 0.1), (0.5, 1e-6, 0.01), (0.9, 1e-3, 0.2)]
    ref_state = {}
    for t in range(4):
        opt.zero_grad()
        loss_fn(model, t).backward()
        opt.step()
        ref_model.zero_grad()
        loss_fn(ref_model, t).backward()
        with torch.no_grad():
            for layer, (beta, eps, lr) in zip((ref_model[0], ref_model[2], ref_model[4]), hyper):
                for p in layer.parameters():
                    s = ref_state.setdefault(p, (torch.zeros_like(p), torch.zeros_like(p)))
                    F.single_tensor_grad_diff_(p.grad, *s, beta=beta, eps=eps, step=t + 1)
                    p.sub_(p.grad, alpha=lr)
    assert_same(params_of(model), params_of(ref_model))
    assert all(opt.state[p]["step"] == 4 for p in model.parameters())


def _param_specs(model):
    """(all params at once, first part, the rest for add_param_group), in four spellings."""
    named = list(model.named_parameters())
    tensors = [p for _, p in named]
    return {
        "tensors": (tensors, tensors[:2], {"params": tensors[2:]}),
        "named": (named, named[:2], {"params": named[2:]}),
        "dicts": (
            [{"params": tensors[:2]}, {"params": tensors[2:], "lr": 0.5}],
            [{"params": tensors[:2]}],
            {"params": tensors[2:], "lr": 0.5},
        ),
        "named dicts": (
            [{"params": named[:2]}, {"params": named[2:], "curvature_beta": 0.8}],
            [{"params": named[:2]}],
            {"params": named[2:], "curvature_beta": 0.8},
        ),
    }


@pytest.mark.parametrize("kind", ["tensors", "named", "dicts", "named dicts"])
def test_params_as_tensors_named_pairs_and_dicts(kind):
    a, b = mlp(), mlp()
    whole = _param_specs(a)[kind][0]
    _, first, rest = _param_specs(b)[kind]
    opt_a = HessianLRAdaptation(torch.optim.Adam(whole, lr=1e-2))
    opt_b = HessianLRAdaptation(torch.optim.Adam(first, lr=1e-2))
    opt_b.add_param_group(rest)
    assert all("curvature_beta" in g and "curvature_eps" in g for g in opt_b.param_groups)
    if kind.startswith("named"):
        assert opt_b.param_groups[1]["param_names"] == ["2.weight", "2.bias", "4.weight", "4.bias"]
    if kind == "named dicts":
        assert [g["curvature_beta"] for g in opt_a.param_groups] == [0.99, 0.8]
    train(a, opt_a, 3)
    train(b, opt_b, 3)
    assert len(opt_a.state) == len(opt_b.state) == 6
    assert_same(params_of(a), params_of(b))


def test_nonfinite_error_names_the_parameter(path):
    model = mlp()
    opt = HessianLRAdaptation(torch.optim.Adam(model.named_parameters(), lr=1e-3), fused=path == "kernel")
    train(model, opt, 2)
    state_before = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for p, s in opt.state.items()}
    params_before = params_of(model)
    opt.zero_grad()
    loss_fn(model, 5).backward()
    model[2].weight.grad[3, 4] = float("nan")
    grads_before = [p.grad.clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match=r"'2\.weight'"):
        opt.step()
    # Nothing moved: parameters, gradients, curvature state and step counts.
    assert_same(params_of(model), params_before)
    for p, g in zip(model.parameters(), grads_before):
        assert torch.equal(p.grad, g, ) or (torch.isnan(g).any() and torch.equal(p.grad.nan_to_num(), g.nan_to_num()))
    for p, s in opt.state.items():
        for k, v in s.items():
            assert torch.equal(v, state_before[p][k]) if torch.is_tensor(v) else v == state_before[p][k]


def test_nonfinite_skip_changes_nothing_and_training_continues(path):
    model, ref = mlp(), mlp()
    opt = HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-2), nonfinite="skip", fused=path == "kernel")
    base_ref = torch.optim.Adam(ref.parameters(), lr=1e-2)
    ref_state = reference_train(ref, base_ref, 2)
    train(model, opt, 2)
    h_before = [opt.state[p]["h"].clone() for p in model.parameters()]
    before = params_of(model)
    opt.zero_grad()
    loss = loss_fn(model, 99)
    loss.backward()
    model[0].bias.grad[0] = float("inf")
    assert opt.step(lambda: loss) is loss
    assert_same(params_of(model), before)
    assert all(torch.equal(opt.state[p]["h"], h) for p, h in zip(model.parameters(), h_before))
    assert all(s["step"] == 2 for s in opt.state.values())
    assert all(torch.isfinite(s["h"]).all() for s in opt.state.values())
    # The skipped step left no trace: continuing matches the reference that never saw it.
    train(model, opt, 3, start=2)
    reference_train(ref, base_ref, 3, start=2, state=ref_state)
    assert_same(params_of(model), params_of(ref))


def test_large_finite_fp16_gradients_are_not_mistaken_for_inf(path):
    # The pure-torch check's fp16 2-norm overflows here (sqrt(1e5) * 300 > 65504); the exact
    # re-check must accept the step. The float32 state takes these values without overflow.
    p = torch.nn.Parameter(torch.zeros(100_000, dtype=torch.float16))
    opt = HessianLRAdaptation(torch.optim.SGD([p], lr=1.0), eps=7.0, fused=path == "kernel")
    p.grad = torch.full((100_000,), 300.0, dtype=torch.float16)
    opt.step()
    assert opt.state[p]["step"] == 1 and opt.state[p]["h"].dtype == torch.float32
    assert torch.equal(opt.state[p]["h"], torch.full((100_000,), 0.01 * 90000.0))
    assert torch.equal(p, torch.full((100_000,), -300.0 / (90000.0 + 7.0) ** 0.5).half())


def test_closure_runs_with_grad_and_returns_loss(path):
    model = mlp()
    opt = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.1), fused=path == "kernel")
    calls = []

    def closure():
        assert torch.is_grad_enabled()
        opt.zero_grad()
        loss = loss_fn(model, 0)
        loss.backward()
        calls.append(loss.item())
        return loss

    with torch.no_grad():
        out = opt.step(closure)
    assert calls and out.item() == calls[0]
    assert all(s["step"] == 1 for s in opt.state.values())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    loss_fn(model, 1).backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_missing_grad_keeps_state_and_frozen_params_are_skipped(path):
    model = mlp()
    model[0].weight.requires_grad_(False)  # frozen from the start: never gets state
    frozen_before = model[0].weight.detach().clone()
    opt = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.1), fused=path == "kernel")
    train(model, opt, 2)
    assert model[0].weight not in opt.state or not opt.state[model[0].weight]
    assert torch.equal(model[0].weight, frozen_before)

    # A parameter whose grad is None on a step keeps its state exactly.
    idle = model[2].weight
    saved = {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[idle].items()}
    opt.zero_grad()
    loss_fn(model, 2).backward()
    idle.grad = None
    idle_before = idle.detach().clone()
    opt.step()
    assert opt.state[idle]["step"] == 2 and torch.equal(idle, idle_before)
    assert all(torch.equal(opt.state[idle][k], saved[k]) for k in ("prev_grad", "h"))
    assert opt.state[model[2].bias]["step"] == 3
    # Next step it uses its own step count (3) for the bias correction.
    opt.zero_grad()
    loss_fn(model, 3).backward()
    g = idle.grad.clone()
    prev, h = saved["prev_grad"].clone(), saved["h"].clone()
    F.single_tensor_grad_diff_(g, prev, h, beta=0.99, eps=1e-8, step=3)
    w_before = idle.detach().clone()
    opt.step()
    assert torch.equal(opt.state[idle]["h"], h)
    # SGD steps with param.add_(grad, alpha=-lr), which may fuse the multiply-add (one rounding):
    # the same op on the same layout gives the expectation bit for bit.
    assert torch.equal(idle.detach(), w_before.add(g, alpha=-0.1))
    assert opt.state[idle]["step"] == 3 and opt.state[model[2].bias]["step"] == 4


def test_unfrozen_parameter_starts_its_own_state(path):
    model = mlp()
    model[4].weight.requires_grad_(False)
    opt = HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-3), fused=path == "kernel")
    train(model, opt, 2)
    model[4].weight.requires_grad_(True)
    train(model, opt, 1, start=2)
    assert opt.state[model[4].weight]["step"] == 1 and opt.state[model[4].bias]["step"] == 3


def test_sparse_gradients_are_refused(path):
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = HessianLRAdaptation(torch.optim.SGD(emb.parameters(), lr=0.1), fused=path == "kernel")
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_wrapping_a_wrapper_or_a_non_optimizer_is_a_type_error():
    model = mlp()
    opt = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="already a HessianLRAdaptation"):
        HessianLRAdaptation(opt)
    for thing in (model, list(model.parameters()), torch.optim.SGD, None):
        with pytest.raises(TypeError, match="torch.optim.Optimizer"):
            HessianLRAdaptation(thing)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"beta": -0.1}, r"beta must be in \[0, 1\)"),
        ({"beta": 1.0}, r"beta must be in \[0, 1\)"),
        ({"beta": math.nan}, r"beta must be in \[0, 1\)"),
        ({"eps": 0.0}, r"eps must be .*> 0"),
        ({"eps": -1e-8}, r"eps must be .*> 0"),
        ({"eps": math.inf}, r"eps must be .*> 0"),
        ({"nonfinite": "ignore"}, r"nonfinite must be one of \('error', 'skip'\)"),
        ({"state_dtype": torch.int32}, "state_dtype must be a floating"),
        ({"estimator": "nope"}, "estimator must be one of"),
        ({"fused": "yes"}, "fused must be"),
    ],
)
def test_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HessianLRAdaptation(torch.optim.SGD(mlp().parameters(), lr=0.1), **kwargs)


def test_invalid_group_hyperparameters():
    model = mlp()
    with pytest.raises(ValueError, match=r"curvature_beta must be in \[0, 1\)"):
        HessianLRAdaptation(torch.optim.SGD([{"params": model.parameters(), "curvature_beta": 1.5}], lr=0.1))
    opt = HessianLRAdaptation(torch.optim.SGD(model[0].parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"curvature_eps must be .*> 0"):
        opt.add_param_group({"params": model[2].parameters(), "curvature_eps": 0})
    opt.param_groups[0]["curvature_beta"] = 2.0  # set behind the wrapper's back: caught at step()
    loss_fn(model, 0).backward()
    with pytest.raises(ValueError, match=r"curvature_beta must be in \[0, 1\)"):
        opt.step()


def test_hooks_and_pickle(path):
    import copy

    model = mlp()
    opt = HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-3), fused=path == "kernel")
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: seen.append("post"))
    train(model, opt, 1)
    assert seen == ["pre", "post"]
    clone = copy.deepcopy(opt)
    assert clone.uses_fused_kernel == opt.uses_fused_kernel


def test_step_allocates_no_model_sized_temporaries(path):
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256))
    opt = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.1, foreach=False), fused=path == "kernel")
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 256)).sum().backward()
        opt.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        opt.step()
    allocated = sum(
        e.self_cpu_memory_usage for e in prof.events() if e.name.startswith("aten::") and e.self_cpu_memory_usage > 0
    )
    smallest_param = min(p.numel() * p.element_size() for p in model.parameters())
    assert allocated < smallest_param  # at most the non-finite check's per-tensor scalars
    tensors = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    assert len(tensors) == 2 * len(list(model.parameters()))  # exactly two state tensors per parameter
