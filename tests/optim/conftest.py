"""Shared fixtures for the optimizer tests.

``path`` parametrizes a test over the two implementations of the grad-diff step: ``"torch"``
(pure-torch ops, always available) and ``"kernel"`` (the compiled C++ kernel; built on first use,
~35 s once per machine, then cached; skipped when no C++ toolchain is available).
"""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from hessian_lr.optim import kernel

_KERNEL: list = []


def kernel_or_skip() -> None:
    if not _KERNEL:
        if shutil.which("c++") is None and shutil.which("g++") is None:
            _KERNEL.append(None)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _KERNEL.append(kernel.load(compile=True))
    if _KERNEL[0] is None:
        pytest.skip("compiled kernel unavailable (no C++ toolchain)")


@pytest.fixture(params=["torch", "kernel"])
def path(request) -> str:
    """Which grad-diff implementation the wrapper uses; pass ``fused=(path == "kernel")``."""
    if request.param == "kernel":
        kernel_or_skip()
    return request.param


@pytest.fixture
def kernel_module():
    kernel_or_skip()
    return _KERNEL[0]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
