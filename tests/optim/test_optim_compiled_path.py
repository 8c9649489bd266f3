"""The ``torch.compile``-d pure-torch path (``fused=True`` where the C++ kernel does not run: CUDA,
machines without the kernel) built and checked on CPU: it trains like the reference definition, to
float tolerance (the compiler picks its own fused multiply-adds), for same-dtype state (the rescaled
gradient goes into ``prev_grad``) and wider state (a rescaled copy), and never writes ``p.grad``.

The first call compiles (~10-30 s on 2 cores, then cached on disk by inductor).
"""

from __future__ import annotations

import pytest
import torch
from optim_helpers import batch, mlp

from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim import functional as F


def _loss(model, extra, t):
    x, y = batch(t)
    return torch.nn.functional.cross_entropy(model(x), y) + (extra.float() ** 2).sum() * 0.1


def test_compiled_path_trains_like_the_reference(monkeypatch):
    monkeypatch.setenv("HESSIAN_LR_NO_KERNEL", "1")  # hide the C++ kernel: CPU tensors take the compiled path
    model, ref_model = mlp(), mlp()
    extra = torch.nn.Parameter(torch.linspace(-1, 1, 10).to(torch.bfloat16))  # float32 state: a rescaled copy
    ref_extra = torch.nn.Parameter(extra.detach().clone())
    opt = HessianLRAdaptation(torch.optim.SGD([*model.parameters(), extra], lr=0.05), beta=0.9, fused=True)
    assert opt.implementations == {"compiled"} and not opt.uses_fused_kernel
    ref_params = [*ref_model.parameters(), ref_extra]
    ref_opt = torch.optim.SGD(ref_params, lr=0.05)
    ref_state = [(torch.zeros_like(p, dtype=torch.float32), torch.zeros_like(p, dtype=torch.float32)) for p in ref_params]
    for t in range(1, 5):
        opt.zero_grad()
        _loss(model, extra, t).backward()
        grads = [(p.grad, p.grad.clone()) for p in [*model.parameters(), extra]]
        opt.step()
        assert all(p.grad is g and torch.equal(g, bits) for p, (g, bits) in zip([*model.parameters(), extra], grads))

        ref_opt.zero_grad()
        _loss(ref_model, ref_extra, t).backward()
        with torch.no_grad():
            for p, (prev, h) in zip(ref_params, ref_state):
                F.single_tensor_grad_diff_(p.grad, prev, h, beta=0.9, eps=1e-8, step=t)
        ref_opt.step()
        for p, q in zip([*model.parameters(), extra], ref_params):
            tol = {"rtol": 1e-2, "atol": 1e-2} if p.dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-6}
            torch.testing.assert_close(p, q, **tol)
        for p, (_, h) in zip([*model.parameters(), extra], ref_state):
            torch.testing.assert_close(opt.state[p]["h"], h, rtol=1e-4, atol=1e-12)
            assert torch.equal(opt.state[p]["prev_grad"], p.grad.float())  # g_t itself, exactly


def test_a_failed_compilation_warns_once_and_falls_back_to_eager_ops(monkeypatch):
    import torch._dynamo

    def no_compiler(*args, **kwargs):
        raise torch._dynamo.exc.BackendCompilerFailed(lambda: None, RuntimeError("no C++ compiler"), None)

    monkeypatch.setattr(F, "_compiled", no_compiler)
    monkeypatch.setattr(F, "_compiled_error", None)
    grad = torch.randn(7)
    got, want = (grad.clone(), torch.zeros(7), torch.zeros(7)), (grad.clone(), torch.zeros(7), torch.zeros(7))
    with pytest.warns(UserWarning, match="torch.compile of the grad-diff step failed.*no C\\+\\+ compiler"):
        F.compiled_grad_diff_([got[0]], [got[1]], [got[2]], rows=[0], hyper=[(0.9, 1e-8, 1)], into_prev=[True])
    F.single_tensor_grad_diff_(*want, beta=0.9, eps=1e-8, step=1, into_prev=True)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert F._compiled_error is not None  # later calls go straight to the eager ops, without a warning


def test_the_measured_compilation_is_the_one_the_steps_reuse(monkeypatch):
    """Where the default path is measured (a GPU's), the measurement compiles the compiled function
    for the real parameter set, and the wrapper's steps then run that compilation: one graph in all.
    (Dynamo's eager backend with a counter stands in for inductor, so nothing is compiled to C++;
    the compiled function is the only candidate, so no timing decides anything.)"""
    from torch._dynamo.testing import CompileCounter

    from hessian_lr.optim import autotune

    counter = CompileCounter()
    monkeypatch.setattr(F, "_compiled", torch.compile(F._grad_diff_lists, backend=counter, fullgraph=True, dynamic=False))
    monkeypatch.setattr(F, "_compiled_error", None)
    monkeypatch.setattr(autotune, "CANDIDATES", (F.Implementation.COMPILED,))
    monkeypatch.setattr(autotune, "_decisions", {})
    monkeypatch.setattr(autotune, "_timings", {})
    choose = F.choose_implementation
    monkeypatch.setattr(F, "choose_implementation",  # CPU tensors measured as a GPU's would be
                        lambda device_type, **kw: choose("cuda", **{**kw, "kernel": None}))
    model, ref_model = mlp(), mlp()
    opt = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.05), beta=0.9)
    for t in range(1, 4):
        opt.zero_grad()
        _loss(model, torch.zeros(()), t).backward()
        opt.step()
    assert opt.implementations == {"compiled"} and counter.frame_count == 1
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.05)
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in ref_model.parameters()]
    for t in range(1, 4):
        ref_opt.zero_grad()
        _loss(ref_model, torch.zeros(()), t).backward()
        with torch.no_grad():
            for p, (prev, h) in zip(ref_model.parameters(), state):
                F.single_tensor_grad_diff_(p.grad, prev, h, beta=0.9, eps=1e-8, step=t)
        ref_opt.step()
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
