"""Announced events: what a run tells a test (or a supervising program) about where it is, so that
kill and interrupt tests act on a known point of the run instead of on a guess of the time.

Off unless the environment names a file descriptor: with ``HESSIAN_LR_EVENTS_FD=N`` (an fd the
process inherited, e.g. the write end of a pipe) every :func:`announce` writes one line
``<kind> <field> ...`` to it, e.g. ``trial-told compare.mnist1d-mlp.adam.1a2b3c 2 COMPLETE``.

``HESSIAN_LR_HOLD`` holds the run at events: a comma-separated list of ``fnmatch`` patterns
matched against the line; ``name#N`` holds at the N-th matching event only (1-based). After
announcing a held event the announcing thread waits until a line comes on the descriptor
``HESSIAN_LR_GO_FD`` (one line releases one hold), or until :func:`release_all` (the lanes do it
when they stop), or forever if no such descriptor was given — a test then kills the process
while it stands exactly there. A hold in the main thread is interrupted by SIGINT like any wait.

The variables are removed from the environment when read, so the processes this one starts
(spawned workers) never write to a descriptor that is something else there.

Events announced (``<study>`` is the Optuna study name):

``cli-start``                       the console script runs (before torch is imported)
``trial-asking <study> <number>``   a trial exists in the storage, its parameters not drawn yet
``param-drawn <study> <number> <name>`` one of its parameters is in the storage
``batch-started <study> <numbers>`` trials handed to training (comma-separated numbers)
``epoch <task>``                    one training epoch of a tuning task or ``final`` finished
``trial-told <study> <number> <state>``
``final-saved <run key>``           a final run's result is on disk
``job-claimed <study> <number>``    a job of the storage (a batch of final runs) is taken by this process
``job-done <study> <number>``       its result is in the storage
``worker-waiting <study>``          a worker waits for the run named ``<study>`` to start
``lanes-joining``                   this thread's lane is done; waiting for the other lanes
``storage-retry <call>``            a database call failed for want of a connection; retrying
``outputs-written <folder>``        results.json and the report are written
"""

from __future__ import annotations

import fnmatch
import os
import threading

__all__ = ["announce", "enabled", "release_all"]

_fd: int | None = None
_go_fd: int | None = None
_holds: list[tuple[str, int | None]] = []
_counts: dict[int, int] = {}
_configured = False
_write_lock = threading.Lock()
_cond = threading.Condition()
_released = 0  # lines read from the go descriptor, not yet used by a hold
_release_all = False
_reader: threading.Thread | None = None


def _configure() -> None:
    global _fd, _go_fd, _configured
    with _write_lock:
        if _configured:
            return
        fd = os.environ.pop("HESSIAN_LR_EVENTS_FD", None)
        go = os.environ.pop("HESSIAN_LR_GO_FD", None)
        holds = os.environ.pop("HESSIAN_LR_HOLD", None)
        _fd = int(fd) if fd else None
        _go_fd = int(go) if go else None
        for pattern in (holds or "").split(","):
            pattern = pattern.strip()
            if pattern:
                name, _, nth = pattern.partition("#")
                _holds.append((name, int(nth) if nth else None))
        _configured = True


def enabled() -> bool:
    _configure()
    return _fd is not None


def _read_go() -> None:
    global _released
    with os.fdopen(_go_fd, "rb", buffering=0) as fh:  # type: ignore[arg-type]
        while fh.readline():
            with _cond:
                _released += 1
                _cond.notify_all()


def _hold() -> None:
    global _released, _reader
    with _cond:
        if _go_fd is not None and _reader is None:
            _reader = threading.Thread(target=_read_go, daemon=True, name="hessian-lr-events-go")
            _reader.start()
        while not (_released or _release_all):
            _cond.wait()
        if _released:
            _released -= 1


def announce(kind: str, *fields: object) -> None:
    """Write ``kind field ...`` as one line when events are enabled, then hold if asked to."""
    if not _configured:
        _configure()
    if _fd is None:
        return
    line = " ".join([kind, *(str(f) for f in fields)])
    hold = False
    with _write_lock:
        os.write(_fd, (line + "\n").encode())
        for index, (pattern, nth) in enumerate(_holds):
            if fnmatch.fnmatchcase(line, pattern):
                _counts[index] = _counts.get(index, 0) + 1
                hold = hold or nth is None or _counts[index] == nth
    if hold:
        _hold()


def release_all() -> None:
    """Let every held thread go on, now and from now on (a run that is stopping)."""
    global _release_all
    if _fd is None or not _holds:
        return
    with _cond:
        _release_all = True
        _cond.notify_all()
