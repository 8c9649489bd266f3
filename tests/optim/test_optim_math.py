"""The update rule: a hand-computed example, and every fast path against the reference."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest
import torch

from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim import functional as F


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_two_steps_by_hand(path, dtype):
    # beta = 0.5, eps = 7, SGD(lr=1), p0 = (10, -10), g1 = (3, -3), g2 = (6, -6):
    # step 1: d = 3,  h = 0.5*0 + 0.5*9 = 4.5,   hhat = 4.5/(1-0.5)   = 9,  g~ = 3/sqrt(9+7)  = 0.75
    # step 2: d = 3,  h = 0.5*4.5 + 0.5*9 = 6.75, hhat = 6.75/(1-0.25) = 9,  g~ = 6/sqrt(9+7)  = 1.5
    # p: 10 -> 9.25 -> 7.75 (and mirrored), prev_grad = g2; p.grad stays the given gradient.
    p = torch.nn.Parameter(torch.tensor([10.0, -10.0], dtype=dtype))
    base = torch.optim.SGD([p], lr=1.0)
    opt = HessianLRAdaptation(base, beta=0.5, eps=7.0, fused=path == "kernel")
    seen_by_base = []
    base.register_step_pre_hook(lambda o, args, kwargs: seen_by_base.append(p.grad.tolist()))
    p.grad = torch.tensor([3.0, -3.0], dtype=dtype)
    opt.step()
    assert seen_by_base == [[0.75, -0.75]]
    assert p.grad.tolist() == [3.0, -3.0]
    assert p.tolist() == [9.25, -9.25]
    assert opt.state[p]["h"].tolist() == [4.5, 4.5]
    assert opt.state[p]["prev_grad"].tolist() == [3.0, -3.0]
    assert opt.state[p]["step"] == 1
    p.grad = torch.tensor([6.0, -6.0], dtype=dtype)
    opt.step()
    assert seen_by_base[-1] == [1.5, -1.5]
    assert p.grad.tolist() == [6.0, -6.0]
    assert p.tolist() == [7.75, -7.75]
    assert opt.state[p]["h"].tolist() == [6.75, 6.75]
    assert opt.state[p]["prev_grad"].tolist() == [6.0, -6.0]
    assert opt.curvature_estimate(p).tolist() == [9.0, 9.0]
    assert opt.state[p]["step"] == 2


def _random_case(dtype, state_dtype, shape=(37, 11), seed=0):
    g = torch.Generator().manual_seed(seed)
    grad = torch.randn(shape, generator=g).to(dtype)
    prev = torch.randn(shape, generator=g).to(state_dtype)
    h = torch.rand(shape, generator=g).to(state_dtype)
    return grad, prev, h


DTYPE_PAIRS = [
    (torch.float32, torch.float32), (torch.float64, torch.float64), (torch.bfloat16, torch.float32),
    (torch.float16, torch.float32), (torch.float32, torch.float64),
]


def _layout_cases(dtype, state_dtype, layout):
    cases = []
    for seed in range(3):
        shape = (4, 3, 5, 6) if layout == "channels_last" else (37, 11)
        grad, prev, h = _random_case(dtype, state_dtype, shape, seed)
        if layout == "transposed":
            grad = grad.t().contiguous().t()  # non-dense-alike with the state: reference-op fallback
        if layout == "channels_last":
            grad, prev, h = (x.contiguous(memory_format=torch.channels_last) for x in (grad, prev, h))
        cases.append((grad, prev, h))
    return cases


# The rescaled gradient goes into prev_grad only where the dtypes agree.
KERNEL_CASES = [(g, s, False) for g, s in DTYPE_PAIRS] + [(g, s, True) for g, s in DTYPE_PAIRS if g == s]


@pytest.mark.parametrize("dtype,state_dtype,into_prev", KERNEL_CASES)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "channels_last"])
def test_kernel_matches_reference(kernel_module, dtype, state_dtype, layout, into_prev):
    cases = _layout_cases(dtype, state_dtype, layout)
    ref = [tuple(x.clone() for x in c) for c in cases]
    steps = (1, 2, 7)
    for (grad, prev, h), step in zip(ref, steps):
        F.single_tensor_grad_diff_(grad, prev, h, beta=0.9, eps=1e-6, step=step, into_prev=into_prev)
    scales = [1 / F.bias_correction(0.9, t) for t in steps]
    grads_before = [c[0].clone() for c in cases]
    kernel_module.grad_diff_(
        [c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases], [0, 1, 2],
        [0.9] * 3, [1e-6] * 3, scales, [into_prev] * 3,
    )
    for (grad, prev, h), (rg, rp, rh), before in zip(cases, ref, grads_before):
        # Same operations in the same order: bit-identical to the reference.
        assert torch.equal(grad, rg) and torch.equal(prev, rp) and torch.equal(h, rh)
        if into_prev:
            assert torch.equal(grad, before)  # only read


def test_into_prev_is_the_in_place_update_with_the_outputs_swapped():
    grad, prev, h = _random_case(torch.float32, torch.float32)
    a = (grad.clone(), prev.clone(), h.clone())
    b = (grad.clone(), prev.clone(), h.clone())
    F.single_tensor_grad_diff_(*a, beta=0.9, eps=1e-6, step=3)
    F.single_tensor_grad_diff_(*b, beta=0.9, eps=1e-6, step=3, into_prev=True)
    assert torch.equal(b[1], a[0])  # the rescaled gradient
    assert torch.equal(b[0], grad) and torch.equal(a[1], grad)  # g_t: untouched / copied
    assert torch.equal(a[2], b[2])


def test_kernel_first_nonfinite(kernel_module):
    grads = [torch.randn(5), torch.randn(3, 4).t(), torch.randn(6, dtype=torch.float64), torch.randn(4).half()]
    assert kernel_module.first_nonfinite(grads) == -1
    for index, value in ((3, float("inf")), (1, float("nan")), (2, -float("inf"))):
        bad = [g.clone() for g in grads]
        bad[index][(-1,) * bad[index].dim()] = value
        assert kernel_module.first_nonfinite(bad) == index
        assert F.first_nonfinite(bad) == index
    assert F.first_nonfinite(grads) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("into_prev", [False, True], ids=["in-place", "into-prev"])
def test_foreach_matches_reference(dtype, into_prev):
    cases = [_random_case(dtype, dtype, (n, 3), seed) for seed, n in enumerate((5, 17, 64))]
    ref = [tuple(x.clone() for x in c) for c in cases]
    for grad, prev, h in ref:
        F.single_tensor_grad_diff_(grad, prev, h, beta=0.95, eps=1e-8, step=4, into_prev=into_prev)
    F.foreach_grad_diff_([c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases],
                         beta=0.95, eps=1e-8, step=4, into_prev=into_prev)
    for got, want in zip(cases, ref):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dispatcher_groups_tensors_by_implementation_and_hyperparameters(kernel_module):
    """grad_diff_ with per-tensor rows, mixed dtypes, both outputs and mixed implementations equals
    one reference call per tensor, bit for bit."""
    specs = [(torch.float32, torch.float32, True), (torch.bfloat16, torch.float32, False),
             (torch.float64, torch.float64, False), (torch.float32, torch.float32, True)]
    cases = [_random_case(g, s, (9, 4), seed) for seed, (g, s, _) in enumerate(specs)]
    into = [spec[2] for spec in specs]
    hyper = [(0.9, 1e-6, 3), (0.5, 1e-3, 1)]
    rows = [0, 0, 1, 0]
    for impls in (["foreach"] * 4, ["for-loop"] * 4, ["kernel"] * 4, ["foreach", "kernel", "for-loop", "kernel"]):
        got = [tuple(x.clone() for x in c) for c in cases]
        want = [tuple(x.clone() for x in c) for c in cases]
        F.grad_diff_([c[0] for c in got], [c[1] for c in got], [c[2] for c in got], rows=rows, hyper=hyper,
                     into_prev=into, implementations=[F.Implementation(i) for i in impls], kernel=kernel_module)
        for (grad, prev, h), row, into_prev in zip(want, rows, into):
            beta, eps, step = hyper[row]
            F.single_tensor_grad_diff_(grad, prev, h, beta=beta, eps=eps, step=step, into_prev=into_prev)
        for a, b in zip(got, want):
            assert all(torch.equal(x, y) for x, y in zip(a, b)), impls


def test_refill_copies_g_back_into_prev_grad(kernel_module):
    # Small tensors, a transposed pair (not dense-alike: at::copy_), float64, and > 1 MiB ones with a
    # misaligned destination (the kernel's streaming-store copy with its unaligned head and tail).
    grads = [torch.randn(5, 3), torch.randn(4, 6).t(), torch.randn(7, dtype=torch.float64), torch.randn(300_001),
             torch.randn(2, 150_007, dtype=torch.float64)]
    for kernel in (kernel_module, None):
        prevs = [torch.zeros(5, 3), torch.zeros(6, 4), torch.zeros(7, dtype=torch.float64),
                 torch.zeros(300_002)[1:], torch.zeros(2 * 150_007 + 3, dtype=torch.float64)[3:].view(2, 150_007)]
        F.refill_prev_grads_(prevs, grads, kernel=kernel)
        assert all(torch.equal(p, g) for p, g in zip(prevs, grads))


def test_choose_implementation_is_the_documented_rule():
    k = object()
    choose = F.choose_implementation
    assert choose("cpu", fused=None, foreach=None, kernel=k) is F.Implementation.KERNEL
    assert choose("cpu", fused=True, foreach=None, kernel=k) is F.Implementation.KERNEL
    assert choose("cuda", fused=None, foreach=None, kernel=k) is F.Implementation.AUTOTUNE  # measured there
    assert choose("cuda", fused=True, foreach=None, kernel=k) is F.Implementation.COMPILED
    assert choose("cpu", fused=True, foreach=None, kernel=None) is F.Implementation.COMPILED  # no kernel built
    assert choose("cpu", fused=None, foreach=None, kernel=None) is F.Implementation.FOREACH
    assert choose("cpu", fused=False, foreach=None, kernel=k) is F.Implementation.FOREACH
    assert choose("cpu", fused=False, foreach=False, kernel=k) is F.Implementation.FOR_LOOP


def test_prev_grad_is_a_copy(path):
    p = torch.nn.Parameter(torch.ones(4, 3))
    opt = HessianLRAdaptation(torch.optim.SGD([p], lr=0.1), fused=path == "kernel")
    p.grad = torch.full((4, 3), 2.0)
    opt.step()
    stored = opt.state[p]["prev_grad"]
    assert stored.data_ptr() != p.grad.data_ptr()
    before = stored.clone()
    p.grad.mul_(100.0).add_(5.0)  # in-place edits of p.grad after step() must not reach the state
    assert torch.equal(stored, before) and torch.equal(before, torch.full((4, 3), 2.0))
    # And the next difference is really g2 - g1 (the aliasing bug would make it 0 and h decay).
    p.grad = torch.full((4, 3), 5.0)
    opt.step()
    beta = 0.99
    assert torch.allclose(opt.state[p]["h"], torch.full((4, 3), beta * (1 - beta) * 4 + (1 - beta) * 9))


def test_docstring_gives_the_math():
    doc = HessianLRAdaptation.__doc__
    for piece in ("g_t - g_{t-1}", r"\beta\, h_{t-1}", r"1-\beta^{t}", r"\sqrt{\hat h_t + \epsilon}"):
        assert piece in doc


def test_optimizer_code_imports_only_torch():
    root = pathlib.Path(F.__file__).parent
    allowed = {"torch", "hessian_lr"} | set(sys.stdlib_module_names)
    for file in root.glob("*.py"):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{file.name} imports {name}"
                if name.startswith("hessian_lr"):
                    assert name.startswith("hessian_lr.optim"), f"{file.name} imports {name}"


@pytest.mark.parametrize("env", [None, "/tmp/some-extensions-dir"])
def test_kernel_build_dir_is_the_one_torch_builds_into(monkeypatch, env):
    """kernel._build_dir mirrors torch.utils.cpp_extension._get_build_directory (not imported
    when loading the built kernel); if torch changes its layout this test says so."""
    from torch.utils.cpp_extension import _get_build_directory

    from hessian_lr.optim import kernel

    if env is None:
        monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    else:
        monkeypatch.setenv("TORCH_EXTENSIONS_DIR", env)
    assert kernel._build_dir() == _get_build_directory(kernel._NAME, verbose=False)
