"""The C++ kernel built on first use (``HESSIAN_LR_KERNEL=auto``, the default), with an empty
extension cache: announced in one line, once per machine under a file lock, and a fallback to the
pure-torch path -- never an exception in the step -- when the toolchain is missing or the build
fails. The builder is replaced by one that hands back the already-built kernel (the real build
takes ~40 s and runs once, at install), so these tests compile nothing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading

import pytest
import torch
from optim_helpers import KERNEL, kernel_or_skip, loss_fn, mlp, reference_train, train

from hessian_lr.optim import HessianLRAdaptation, kernel

LOGGER = "hessian_lr.optim.kernel"


@pytest.fixture
def real_kernel():
    """The kernel as built at install (loaded before ``empty_cache`` hides the cache)."""
    kernel_or_skip()
    return KERNEL[0]


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """A fresh process's view: an empty TORCH_EXTENSIONS_DIR, nothing loaded, the default mode,
    a toolchain present."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    monkeypatch.delenv("HESSIAN_LR_KERNEL", raising=False)
    monkeypatch.delenv("HESSIAN_LR_NO_KERNEL", raising=False)
    monkeypatch.setattr(kernel, "_module", None)
    monkeypatch.setattr(kernel, "_failed", None)
    monkeypatch.setattr(kernel, "missing_toolchain", lambda: None)
    return tmp_path / "extensions"


class Builder:
    """Stands in for ``kernel.build``: counts calls, checks the file lock is held during the build,
    and returns the real (already built) kernel or raises ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.error = error
        self.lock_was_held = None

    def __call__(self, verbose: bool = False):
        self.calls += 1
        with open(kernel._build_dir() + ".lock", "a+") as other:  # a second open file: flock conflicts
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.lock_was_held = False
                fcntl.flock(other, fcntl.LOCK_UN)
            except BlockingIOError:
                self.lock_was_held = True
        if self.error is not None:
            raise self.error
        return KERNEL[0]


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_the_first_step_builds_the_kernel_once_announced_in_one_line(real_kernel, empty_cache, monkeypatch, caplog):
    builder = Builder()
    monkeypatch.setattr(kernel, "build", builder)
    os.makedirs(kernel._build_dir())
    open(os.path.join(kernel._build_dir(), "lock"), "w").close()  # a killed builder's torch baton
    caplog.set_level(logging.WARNING, logger=LOGGER)

    model, ref_model = mlp(), mlp()
    opt = HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-2))
    assert builder.calls == 0  # building the wrapper builds nothing: the first step that needs it does
    train(model, opt, 3)
    assert builder.calls == 1 and builder.lock_was_held
    assert opt.uses_fused_kernel and opt.implementations == {"kernel"}
    assert _messages(caplog) == [
        f"building hessian-lr's fused grad-diff kernel once (~40 s), cached in {empty_cache / kernel._NAME}"
    ]
    assert not os.path.exists(os.path.join(kernel._build_dir(), "lock"))  # the stale baton is gone
    reference_train(ref_model, torch.optim.Adam(ref_model.parameters(), lr=1e-2), 3)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref_model.parameters()))

    second = HessianLRAdaptation(torch.optim.SGD(mlp().parameters(), lr=0.1))
    assert second.uses_fused_kernel and builder.calls == 1 and len(_messages(caplog)) == 1  # once per process


def test_a_failed_build_falls_back_in_one_line_and_is_not_retried(empty_cache, monkeypatch, caplog):
    builder = Builder(RuntimeError("Error building extension 'hessian_lr_graddiff': g++: internal compiler error"))
    monkeypatch.setattr(kernel, "build", builder)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    model, ref_model = mlp(), mlp()
    opt = HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-2))
    train(model, opt, 3)  # no exception: the eager ops take the step
    assert builder.calls == 1 and opt.implementations == {"foreach"} and not opt.uses_fused_kernel
    reference_train(ref_model, torch.optim.Adam(ref_model.parameters(), lr=1e-2), 3)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref_model.parameters()))
    building, fallback = _messages(caplog)
    assert building.startswith("building hessian-lr's fused grad-diff kernel once")
    assert fallback == (
        "hessian-lr's fused grad-diff kernel is unavailable: its build failed (RuntimeError: Error building "
        "extension 'hessian_lr_graddiff': g++: internal compiler error; recorded in "
        f"{kernel._failure_file()}); using the pure-torch path (slower on CPU; HESSIAN_LR_KERNEL=never silences this)"
    )
    with open(kernel._failure_file()) as f:
        assert "internal compiler error" in f.read()

    monkeypatch.setattr(kernel, "_failed", None)  # another process on this machine
    caplog.clear()
    HessianLRAdaptation(torch.optim.SGD(mlp().parameters(), lr=0.1)).step()
    assert builder.calls == 1  # the recorded failure is not built again
    assert _messages(caplog) == [
        f"hessian-lr's fused grad-diff kernel is unavailable: it failed to build before (see "
        f"{kernel._failure_file()}; delete it to retry); using the pure-torch path (slower on CPU; "
        "HESSIAN_LR_KERNEL=never silences this)"
    ]


def test_no_toolchain_falls_back_without_trying(empty_cache, monkeypatch, caplog):
    builder = Builder()
    monkeypatch.setattr(kernel, "build", builder)
    monkeypatch.setattr(kernel, "missing_toolchain", lambda: "no C++ compiler (c++, g++) on PATH")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    model = mlp()
    opt = HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-2))
    opt.zero_grad()
    loss_fn(model, 0).backward()
    opt.step()
    assert builder.calls == 0 and opt.implementations == {"foreach"}
    assert _messages(caplog) == [
        "hessian-lr's fused grad-diff kernel is unavailable: no C++ compiler (c++, g++) on PATH; using the "
        "pure-torch path (slower on CPU; HESSIAN_LR_KERNEL=never silences this)"
    ]
    assert not os.path.exists(kernel._failure_file())  # a toolchain installed later gets its build


def test_a_process_that_finds_a_build_in_progress_waits_and_loads_it(empty_cache, monkeypatch, caplog):
    """Another process holds the machine lock (it is building): this one says it waits, blocks on
    the lock, then loads that process's build instead of building again."""
    builder = Builder()
    monkeypatch.setattr(kernel, "build", builder)
    sentinel = object()
    monkeypatch.setattr(kernel, "_import_built", lambda: sentinel)
    waiting = threading.Event()

    class Signal(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("waiting for another process"):
                waiting.set()

    signal = Signal()
    logging.getLogger(LOGGER).addHandler(signal)
    os.makedirs(kernel._build_dir())
    got = []
    try:
        with open(kernel._build_dir() + ".lock", "a+") as other_process:
            fcntl.flock(other_process, fcntl.LOCK_EX)
            loader = threading.Thread(target=lambda: got.append(kernel.load()))
            loader.start()
            assert waiting.wait(timeout=60)
            open(os.path.join(kernel._build_dir(), f"{kernel._NAME}.so"), "w").close()  # its build lands
            fcntl.flock(other_process, fcntl.LOCK_UN)
        loader.join(timeout=60)
    finally:
        logging.getLogger(LOGGER).removeHandler(signal)
    assert got == [sentinel] and builder.calls == 0


@pytest.mark.parametrize(
    "value, mode", [(None, "auto"), ("auto", "auto"), ("1", "auto"), ("prebuilt", "prebuilt"), ("never", "never"),
                    ("0", "never"), ("OFF", "never")]
)
def test_the_mode_comes_from_the_environment(monkeypatch, value, mode):
    monkeypatch.delenv("HESSIAN_LR_NO_KERNEL", raising=False)
    if value is None:
        monkeypatch.delenv("HESSIAN_LR_KERNEL", raising=False)
    else:
        monkeypatch.setenv("HESSIAN_LR_KERNEL", value)
    assert kernel.mode() == mode
    monkeypatch.setenv("HESSIAN_LR_NO_KERNEL", "1")  # the older switch
    assert kernel.mode() == "never"


def test_a_bad_mode_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("HESSIAN_LR_NO_KERNEL", raising=False)
    monkeypatch.setenv("HESSIAN_LR_KERNEL", "sometimes")
    with pytest.raises(ValueError, match=r"^HESSIAN_LR_KERNEL must be one of auto, prebuilt, never \(or 0/1\), got 'sometimes'$"):
        kernel.mode()


@pytest.mark.parametrize("mode", ["prebuilt", "never"])
def test_prebuilt_and_never_build_nothing(empty_cache, monkeypatch, caplog, mode):
    builder = Builder()
    monkeypatch.setattr(kernel, "build", builder)
    monkeypatch.setenv("HESSIAN_LR_KERNEL", mode)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    model = mlp()
    opt = HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-2))
    train(model, opt, 2)
    assert builder.calls == 0 and opt.implementations == {"foreach"} and _messages(caplog) == []
