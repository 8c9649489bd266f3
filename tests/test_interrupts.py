"""hessian_lr.interrupts: the first SIGINT raises (or waits for the end of a deferred block),
later ones are only counted, one Python discards is raised again at the next check, and
cleanups still registered run at the end."""

from __future__ import annotations

import signal
import threading

import pytest

from hessian_lr import interrupts


@pytest.fixture
def handler():
    interrupts.install()
    try:
        yield
    finally:
        interrupts.uninstall()


def sigint() -> None:
    # raise_signal delivers to this (the main) thread and runs the Python handler before it
    # returns; os.kill could land on any thread of the process and leave the handler for later.
    signal.raise_signal(signal.SIGINT)


def test_the_first_sigint_raises_later_ones_are_counted(handler):
    with pytest.raises(KeyboardInterrupt):
        sigint()
    sigint()  # cleaning up after the first: not cut short
    sigint()
    assert interrupts.received() == 3


def test_a_deferred_block_is_not_interrupted(handler):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            sigint()
            done.append("after the signal")
    assert done == ["after the signal"]


def test_a_deferred_block_that_raises_keeps_its_own_error(handler):
    with pytest.raises(ValueError):
        with interrupts.deferred():
            sigint()
            raise ValueError("its own")
    assert interrupts.received() == 1


DISCARDED = """
import signal
from hessian_lr import interrupts

class SignalsInItsDestructor:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)

interrupts.install()
obj = SignalsInItsDestructor()
del obj  # the KeyboardInterrupt raised inside __del__ is discarded by Python
print("received", interrupts.received(), flush=True)
try:
    interrupts.check()
except KeyboardInterrupt:
    print("raised at the check", flush=True)
"""


def test_an_interrupt_python_discards_is_raised_at_the_next_check():
    """In a process of its own: pytest replaces sys.unraisablehook during tests."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", DISCARDED], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["received 1", "raised at the check"]
    assert proc.stderr == ""  # no "Exception ignored in ..." report


def test_check_raises_in_other_threads_too(handler):
    with pytest.raises(KeyboardInterrupt):
        sigint()
    raised = []

    def lane() -> None:
        try:
            interrupts.check()
        except KeyboardInterrupt:
            raised.append(True)

    thread = threading.Thread(target=lane)
    thread.start()
    thread.join()
    assert raised == [True]


def test_quiet_counts_only_and_cleanups_run_once(handler):
    ran = []
    token = interrupts.register_cleanup(lambda: ran.append("kept"))
    gone = interrupts.register_cleanup(lambda: ran.append("unregistered"))
    interrupts.unregister_cleanup(gone)
    interrupts.quiet()
    sigint()
    interrupts.check()  # quiet: the command is ending, nothing raises any more
    interrupts.run_cleanups()
    interrupts.run_cleanups()
    interrupts.unregister_cleanup(token)
    assert ran == ["kept"] and interrupts.received() == 1


UNINSTALLED = """
import signal
# Python's own handler, whatever this process inherited (a shell starts a background job with
# SIGINT ignored, and Python then keeps it ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
from hessian_lr import interrupts

assert not interrupts.installed()
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the import changed nothing
try:
    signal.raise_signal(signal.SIGINT)
except KeyboardInterrupt:
    print("raised", flush=True)
interrupts.check()  # nothing counted: no effect
print("received", interrupts.received(), flush=True)
"""


def test_without_install_python_keeps_its_default_behaviour():
    """In a process of its own, so that no other test's (or library's) SIGINT state is in play."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", UNINSTALLED], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["raised", "received 0"]
