"""Models, data and reference training for the optimizer tests (plain functions, no fixtures)."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from hessian_lr.optim import functional as F
from hessian_lr.optim import kernel

# Imported by name from here (not from conftest: several test folders have a conftest.py, and in a
# full run the module called "conftest" may be another folder's).
KERNEL: list = []


def kernel_or_skip() -> None:
    """Build (once, cached on disk) or load the compiled grad-diff kernel; skip without a C++ toolchain."""
    if not KERNEL:
        if shutil.which("c++") is None and shutil.which("g++") is None:
            KERNEL.append(None)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                KERNEL.append(kernel.load(compile=True))
    if KERNEL[0] is None:
        pytest.skip("compiled kernel unavailable (no C++ toolchain)")


def mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    ).to(dtype)


def batch(step: int, dtype: torch.dtype = torch.float32, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(n, 8, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def loss_fn(model: torch.nn.Module, step: int) -> torch.Tensor:
    x, y = batch(step, next(model.parameters()).dtype)
    return torch.nn.functional.cross_entropy(model(x), y)


def train(model, opt, steps, start=0):
    for t in range(start, start + steps):
        opt.zero_grad()
        loss_fn(model, t).backward()
        opt.step()


def reference_train(model, base, steps, *, beta=0.99, eps=1e-8, start=0, state=None):
    """The wrapper's meaning spelled out: reference pre-conditioning, then the base step."""
    state = {} if state is None else state
    for t in range(start, start + steps):
        base.zero_grad()
        loss_fn(model, t).backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is None:
                    continue
                s = state.setdefault(p, {"step": 0, "prev_grad": torch.zeros_like(p), "h": torch.zeros_like(p)})
                s["step"] += 1
                F.single_tensor_grad_diff_(p.grad, s["prev_grad"], s["h"], beta=beta, eps=eps, step=s["step"])
        base.step()
    return state


def tiny_mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """5 -> 7 -> 4 ReLU MLP (the estimator tests' softmax classifier)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 4)).to(dtype)


def train_through_backward(model, opt, steps, start):
    """Steps through ``opt.backward(loss, logits=...)`` (sampling estimators take their samples there)."""
    for t in range(start, start + steps):
        g = torch.Generator().manual_seed(100 + t)
        x, y = torch.randn(16, 5, generator=g), torch.randint(0, 4, (16,), generator=g)
        logits = model(x)
        opt.zero_grad()
        opt.backward(torch.nn.functional.cross_entropy(logits, y), logits=logits)
        opt.step()


def params_of(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype
        assert torch.equal(x, y), (x - y).abs().max().item()
