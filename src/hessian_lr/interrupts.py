"""Ctrl-C for the command line: every SIGINT, at any moment, ends the command with exit code 130
and one line, and never interrupts the code that cleans up after it.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the main thread happens to
be — inside a ``finally`` block that joins a thread still inside torch (the command returns
with the thread running: the interpreter then aborts, exit -6), inside a destructor (the
exception is printed as "Exception ignored in ..." and discarded: the run finishes with exit 0),
or while the modules are imported (a traceback). :func:`install` replaces it:

- the **first** SIGINT raises ``KeyboardInterrupt`` (unless the main thread is inside
  :func:`deferred`, which raises it when the block ends); later ones are only counted, so the
  unwinding and cleaning up that the first one started is never cut short;
- the signal is counted before anything else, so a ``KeyboardInterrupt`` that Python discards
  (raised in a destructor or a callback) is not lost: :func:`check`, called at every progress
  report, raises it again, and the command's exit code is 130 whenever :func:`received` says a
  SIGINT came;
- "Exception ignored ... KeyboardInterrupt" messages are not printed (the interruption is
  reported once, as the command's one line).

:func:`register_cleanup` records what must happen however the command ends (stop and join the
lanes' threads, end worker processes); :func:`run_cleanups` runs what is left, with SIGINT only
counted, before the command exits.

Nothing here changes anything unless :func:`install` was called (the console script does it
first thing; library users keep Python's default behaviour), except that :func:`check` and
:func:`deferred` are always safe to call, from any thread.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["install", "uninstall", "installed", "received", "check", "deferred", "quiet", "register_cleanup",
           "unregister_cleanup", "run_cleanups"]

_received = 0  # SIGINTs since install()
_raised = False  # whether the handler has raised KeyboardInterrupt for one of them
_depth = 0  # nesting of deferred() blocks in the main thread
_pending = False  # a SIGINT came inside deferred(): raise when the outermost block ends
_quiet = False  # only count from now on (the command is ending)
_previous: Any = None  # the handler install() replaced
_previous_unraisable: Any = None
_installed = False
_cleanups: dict[int, Callable[[], None]] = {}
_cleanup_ids = iter(range(1, 1 << 62))
_cleanup_lock = threading.Lock()


def _handler(signum: int, frame: Any) -> None:
    global _received, _raised, _pending
    _received += 1
    if _quiet or _raised:
        return
    if _depth > 0:
        _pending = True
        return
    _raised = True
    raise KeyboardInterrupt


def _unraisable(unraisable: Any) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        return  # counted by the handler; reported once as the command's line
    (_previous_unraisable or sys.__unraisablehook__)(unraisable)


def install() -> None:
    """Take over SIGINT for this process (main thread only; idempotent)."""
    global _previous, _previous_unraisable, _installed, _received, _raised, _pending, _quiet
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _received, _raised, _pending, _quiet = 0, False, False, False
    _previous = signal.signal(signal.SIGINT, _handler)
    _previous_unraisable = sys.unraisablehook
    sys.unraisablehook = _unraisable
    _installed = True


def uninstall() -> None:
    """Give SIGINT back to the handler :func:`install` replaced (for callers of ``main()`` that
    go on afterwards, e.g. tests)."""
    global _installed
    if not _installed:
        return
    signal.signal(signal.SIGINT, _previous if _previous is not None else signal.default_int_handler)
    sys.unraisablehook = _previous_unraisable or sys.__unraisablehook__
    _installed = False


def installed() -> bool:
    return _installed


def received() -> int:
    """How many SIGINTs came since :func:`install`."""
    return _received


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a SIGINT came and nothing is cleaning up after it yet: at
    progress reports, so that an interrupt Python discarded still stops the run. From any
    thread (a lane raises it into its lane, which stops the others)."""
    if _received and not _quiet and not (threading.current_thread() is threading.main_thread() and _depth):
        raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """A block that SIGINT does not interrupt: an interrupt that comes inside it is raised when
    the outermost such block ends (if an exception is already on its way out, that one goes on
    and the interrupt stays counted). Other threads are never interrupted by signals, so there
    it only runs the block."""
    global _depth, _pending, _raised
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    except BaseException:
        _depth -= 1
        if _depth == 0 and _pending:
            _pending, _raised = False, True
        raise
    _depth -= 1
    if _depth == 0 and _pending and not _quiet:
        _pending, _raised = False, True
        raise KeyboardInterrupt


def quiet() -> None:
    """From here on SIGINT is only counted (the command is ending; its exit code reports it)."""
    global _quiet
    _quiet = True


def register_cleanup(fn: Callable[[], None]) -> int:
    """Record ``fn`` to run if the command ends before :func:`unregister_cleanup` is called with
    the returned token (the normal path cleans up itself and then unregisters)."""
    with _cleanup_lock:
        token = next(_cleanup_ids)
        _cleanups[token] = fn
    return token


def unregister_cleanup(token: int) -> None:
    with _cleanup_lock:
        _cleanups.pop(token, None)


def run_cleanups() -> None:
    """Run every cleanup still registered, newest first, each at most once; errors in one do not
    stop the others."""
    while True:
        with _cleanup_lock:
            if not _cleanups:
                return
            token = max(_cleanups)
            fn = _cleanups.pop(token)
        try:
            fn()
        except BaseException:  # noqa: BLE001 - the command is ending; nothing to report it to
            pass
