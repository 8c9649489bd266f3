"""torch's generic optimizer contract, checked on the wrapper the way torch checks its own optimizers
(``test/test_optim.py``'s ``TestOptimRenewed``: state-dict hooks, step hooks, gradients never written
into, complex parameters as their real view, deepcopy)."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import pytest
import torch
from optim_helpers import kernel_or_skip
from optim_helpers import loss_fn, mlp, train
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from hessian_lr.optim import ESTIMATORS, HessianLRAdaptation, get_estimator

GRADIENT_ONLY = ["grad-diff", "squared-grad", "secant", "secant-rms"]


def _cases(names):
    """(estimator, implementation) pairs: every estimator on the torch path, grad-diff on the kernel too."""
    return [(name, "torch") for name in names] + [pytest.param("grad-diff", "kernel", id="grad-diff-kernel")]


def _implementation(path):
    if path == "kernel":
        kernel_or_skip()
    return path


def _wrapped(params, path="torch", base="adam", **kw):
    inner = torch.optim.Adam(params, lr=1e-3) if base == "adam" else torch.optim.SGD(params, lr=1e-3)
    return HessianLRAdaptation(inner, fused=path == "kernel", **kw)


# -- item 1: state-dict hooks -----------------------------------------------------------------
def test_state_dict_hooks_run_as_on_torch_optimizers(path):
    p = torch.nn.Parameter(torch.randn(3))
    opt = _wrapped([p], path)
    calls = []
    opt.register_state_dict_pre_hook(lambda o: calls.append(("pre", o)))
    opt.register_state_dict_post_hook(lambda o, sd: sd.__setitem__("tag", 1))
    sd = opt.state_dict()
    assert "tag" in sd and calls == [("pre", opt)]
    # A post hook may return a replacement dict; prepend puts a hook first.
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "replaced": sd["tag"] + 1})
    opt.register_state_dict_post_hook(lambda o, sd: sd.__setitem__("tag", 10), prepend=True)
    sd = opt.state_dict()
    assert sd["tag"] == 1 and sd["replaced"] == 2  # the prepended hook ran first, then got overwritten


def test_load_state_dict_hooks_run_as_on_torch_optimizers(path):
    p = torch.nn.Parameter(torch.randn(3))
    opt = _wrapped([p], path)
    p.grad = torch.randn(3)
    opt.step()
    saved = opt.state_dict()
    seen = []

    def set_lr(o, sd):  # modifies the shallow copy it is given
        seen.append(sd is saved)
        sd["param_groups"] = copy.deepcopy(sd["param_groups"])
        sd["param_groups"][0]["lr"] = 0.002

    def replace(o, sd):  # returns a replacement
        replacement = copy.deepcopy(sd)
        replacement["param_groups"][0]["lr"] = 0.003
        return replacement

    def after(o):
        o.state["ran_load_state_dict_post_hook"] = o.param_groups[0]["lr"]

    opt.register_load_state_dict_pre_hook(set_lr)
    opt.register_load_state_dict_post_hook(after)
    opt.load_state_dict(saved)
    assert seen == [False] and opt.param_groups[0]["lr"] == 0.002
    assert opt.state["ran_load_state_dict_post_hook"] == 0.002
    assert saved["param_groups"][0]["lr"] == 1e-3  # the caller's dict is untouched
    opt.register_load_state_dict_pre_hook(replace, prepend=True)  # runs first, set_lr then wins
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.002
    assert torch.equal(opt.state[p]["h"], saved["state"][0]["curvature"]["h"])  # the state did load
    # Non-parameter entries a hook put into the state survive a round trip, as with torch's optimizers.
    assert opt.state_dict()["state"]["ran_load_state_dict_post_hook"] == 0.002


# -- item 2: p.grad is never written --------------------------------------------------------
@pytest.mark.parametrize("name,path", _cases(sorted(ESTIMATORS)))
def test_grads_are_never_inplaced_into(name, path):
    """torch's own test: the gradient tensor's version counter does not move over several steps
    (and its bits do not change), whatever the estimator or implementation."""
    path = _implementation(path)
    model = mlp()
    opt = _wrapped(model.parameters(), path, estimator=get_estimator(name))
    x, y = torch.randn(8, 8), torch.randint(0, 3, (8,))
    logits = model(x)
    opt.backward(torch.nn.functional.cross_entropy(logits, y), logits=logits)
    grads = [(p.grad, p.grad._version, p.grad.clone()) for p in model.parameters()]
    moved = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):  # repeated steps on one backward: each sees the same gradient
        opt.step()
    for p, (grad, version, bits) in zip(model.parameters(), grads):
        assert p.grad is grad and grad._version == version and torch.equal(grad, bits)
    assert any(not torch.equal(a, p) for a, p in zip(moved, model.parameters()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.complex64])
def test_the_base_sees_the_rescaled_gradient_and_the_user_keeps_theirs(path, dtype):
    """Across dtypes (prev_grad as the base's gradient; a rescaled copy for low precision with
    float32 state; the complex view): after step() p.grad is the user's gradient, before it the
    base saw g / sqrt(hhat + eps)."""
    p = torch.nn.Parameter(torch.randn(4, 3).to(dtype))
    base = torch.optim.SGD([p], lr=0.1)
    opt = HessianLRAdaptation(base, beta=0.5, eps=1e-3, fused=path == "kernel")
    seen = []
    base.register_step_pre_hook(lambda o, a, k: seen.append(p.grad.clone()))
    for t in range(1, 4):
        grad = torch.randn(4, 3).to(dtype)
        p.grad = grad
        opt.step()
        assert p.grad is grad
        state = opt.state[p]
        g = torch.view_as_real(grad) if dtype.is_complex else grad.float()
        hhat = state["h"] / (1 - 0.5**t)
        expected = (g / torch.sqrt(hhat + 1e-3)).to(g.dtype if dtype.is_complex else dtype)
        got = torch.view_as_real(seen[-1]) if dtype.is_complex else seen[-1]
        torch.testing.assert_close(got, expected, rtol=1e-6 if dtype != torch.bfloat16 else 1e-2, atol=0)
        assert torch.equal(state["prev_grad"], g.to(state["prev_grad"].dtype))


def test_grad_norm_after_step_is_the_users_and_a_second_optimizer_sees_it():
    model = mlp()
    opt = _wrapped(model.parameters())
    watcher = torch.optim.SGD(model.parameters(), lr=0.0)  # e.g. a second optimizer on the same grads
    opt.zero_grad()
    loss_fn(model, 0).backward()
    before = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    opt.step()
    after = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    assert torch.equal(before, after)
    watcher.step()


# -- item 4: global step hooks --------------------------------------------------------------
def test_global_and_instance_step_hooks_fire_once_per_step(path):
    model = mlp()
    base = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt = HessianLRAdaptation(base, fused=path == "kernel")
    order = []
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: order.append(("global pre", o))),
        register_optimizer_step_post_hook(lambda o, a, k: order.append(("global post", o))),
        opt.register_step_pre_hook(lambda o, a, k: order.append(("pre", o))),
        opt.register_step_post_hook(lambda o, a, k: order.append(("post", o))),
        base.register_step_pre_hook(lambda o, a, k: order.append(("base pre", o))),
        base.register_step_post_hook(lambda o, a, k: order.append(("base post", o))),
    ]
    try:
        train(model, opt, 2)
    finally:
        for handle in handles:
            handle.remove()
    one_step = [("global pre", opt), ("pre", opt), ("base pre", base), ("base post", base), ("post", opt),
                ("global post", opt)]
    assert order == one_step * 2


def test_a_scheduler_attached_to_the_base_still_sees_its_steps():
    model = mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = HessianLRAdaptation(base)
    sched = torch.optim.lr_scheduler.StepLR(base, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()" would raise
        train(model, opt, 1)
        sched.step()
    assert base.param_groups[0]["lr"] == 0.05


# -- item 3: complex parameters -------------------------------------------------------------
def _complex_and_twin(seed=0):
    torch.manual_seed(seed)
    complex_params = [torch.randn(6, 5, dtype=torch.complex64, requires_grad=True),
                      torch.randn(6, dtype=torch.complex64, requires_grad=True),
                      torch.randn(6, 5, dtype=torch.float32, requires_grad=True)]  # mixed, as torch's test
    twins = [(torch.view_as_real(p) if p.is_complex() else p).detach().clone().requires_grad_()
             for p in complex_params]
    return complex_params, twins


@pytest.mark.parametrize("name,path", _cases(GRADIENT_ONLY))
@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_complex_parameters_train_like_their_real_view(name, base, path):
    """torch's test_complex: the same gradients given as complex and as real views give the same
    parameters at every step, bit for bit."""
    path = _implementation(path)
    complex_params, twins = _complex_and_twin()
    opt_c = _wrapped(complex_params, path, base, estimator=get_estimator(name))
    opt_r = _wrapped(twins, path, base, estimator=get_estimator(name))
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        for c, r in zip(complex_params, twins):
            r.grad = torch.randn(r.shape, generator=g)
            c.grad = torch.view_as_complex(r.grad.clone()) if c.is_complex() else r.grad.clone()
        opt_c.step()
        opt_r.step()
        for c, r in zip(complex_params, twins):
            assert torch.equal(torch.view_as_real(c) if c.is_complex() else c, r), name
    for c, r in zip(complex_params, twins):
        assert torch.equal(opt_c.curvature_estimate(c), opt_r.curvature_estimate(r))


@pytest.mark.parametrize("name", ["hutchinson", "gauss-newton"])
def test_complex_parameters_with_sampling_estimators_train_like_their_real_view(name):
    """A model with a complex weight and its twin that builds the same weight from real numbers
    (view_as_complex): same probes, same samples, same parameters."""
    torch.manual_seed(0)
    w = torch.randn(5, 4, dtype=torch.complex64, requires_grad=True)
    twin = torch.view_as_real(w).detach().clone().requires_grad_()
    x = torch.randn(16, 5, dtype=torch.complex64, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(3))

    def run(param, weight_of):
        est = get_estimator(name)
        est.load_state_dict({"seed": 7, "generator_states": {}})  # the same stream for both
        opt = HessianLRAdaptation(torch.optim.SGD([param], lr=0.05), eps=1e-6, estimator=est)
        trace = []
        for _ in range(3):
            logits = (x @ weight_of(param)).abs()
            opt.zero_grad()
            opt.backward(torch.nn.functional.cross_entropy(logits, y), logits=logits)
            opt.step()
            trace.append(opt.curvature_estimate(param).clone())
        return trace

    complex_trace = run(w, lambda p: p)
    real_trace = run(twin, torch.view_as_complex)
    for a, b in zip(complex_trace, real_trace):
        assert a.shape == (5, 4, 2)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(torch.view_as_real(w), twin, rtol=1e-5, atol=1e-7)


def test_complex_2d_split_into_real_and_imaginary_parameters():
    """torch's test_complex_2d: one complex tensor against its real and imaginary parts as two
    real parameters (elementwise estimator, so the split does not matter)."""
    a = torch.randn(2, dtype=torch.complex64, requires_grad=True)
    re, im = a.real.detach().clone().requires_grad_(), a.imag.detach().clone().requires_grad_()
    opt_c, opt_r = _wrapped([a], base="sgd"), _wrapped([re, im], base="sgd")

    def rosenbrock(t):
        return ((1 - t[0]) ** 2 + 100 * (t[1] - t[0] ** 2) ** 2).abs()

    for _ in range(5):
        opt_c.zero_grad()
        opt_r.zero_grad()
        rosenbrock(a).backward()
        rosenbrock(torch.complex(re, im)).backward()
        opt_c.step()
        opt_r.step()
        torch.testing.assert_close(a.real, re)
        torch.testing.assert_close(a.imag, im)


# -- item 8: python -OO ---------------------------------------------------------------------
def test_imports_and_trains_under_python_OO():
    code = (
        "import torch, hessian_lr.optim as o\n"
        "p = torch.nn.Parameter(torch.ones(2)); opt = o.HessianLRAdaptation(torch.optim.SGD([p], lr=0.1),"
        " estimator='secant')\n"
        "p.grad = torch.ones(2); opt.step(); print(sorted(o.ESTIMATORS))\n"
    )
    out = subprocess.run([sys.executable, "-OO", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "grad-diff" in out.stdout


# -- deepcopy, as torch's test_deepcopy_copies_all_public_attrs -----------------------------
def test_deepcopy_copies_all_public_attributes(path):
    model = mlp()
    opt = _wrapped(model.parameters(), path)
    train(model, opt, 2)
    clone = copy.deepcopy(opt)
    assert {k for k in vars(opt) if not k.startswith("_")} == {k for k in vars(clone) if not k.startswith("_")}
    assert clone.uses_fused_kernel == opt.uses_fused_kernel
