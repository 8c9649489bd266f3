"""Shared fixtures for the optimizer tests.

``path`` parametrizes a test over the two implementations of the grad-diff step: ``"torch"``
(pure-torch ops, always available) and ``"kernel"`` (the compiled C++ kernel; built on first use,
~35 s once per machine, then cached; skipped when no C++ toolchain is available).
"""

from __future__ import annotations

import pytest

from optim_helpers import KERNEL, kernel_or_skip


@pytest.fixture(params=["torch", "kernel"])
def path(request) -> str:
    """Which grad-diff implementation the wrapper uses; pass ``fused=(path == "kernel")``."""
    if request.param == "kernel":
        kernel_or_skip()
    return request.param


@pytest.fixture
def kernel_module():
    kernel_or_skip()
    return KERNEL[0]
