"""A hessian-lr command run as a subprocess that announces its events (hessian_lr.events) on a
pipe: tests wait for an event, hold the run there, and kill or interrupt it at that exact point —
no sleeps, no polling, nothing that depends on how fast the machine is."""

from __future__ import annotations

import fnmatch
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

WAIT_S = 300  # a safety net for a broken run, never a kill point


def _limit_file_size(size: int):
    """No file the process writes may grow beyond ``size`` bytes: a full disk, for that process."""
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


class Announced:
    """``hessian-lr ARGS`` with events on a pipe; ``hold`` patterns make it stop at those events
    (``name#N``: only the N-th) until :meth:`release` or forever."""

    def __init__(self, args: Sequence[str], *, hold: Sequence[str] = (), env: dict | None = None,
                 cwd: Path | None = None, module: str = "hessian_lr.cli", file_size_limit: int | None = None,
                 new_session: bool = False) -> None:
        events_read, events_write = os.pipe()
        go_read, go_write = os.pipe()
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._stdout = tempfile.TemporaryFile(mode="w+")
        environment = {**os.environ, **(env or {}), "HESSIAN_LR_EVENTS_FD": str(events_write),
                       "HESSIAN_LR_GO_FD": str(go_read), "HESSIAN_LR_HOLD": ",".join(hold)}
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=self._stdout,
                                     stderr=self._stderr, text=True, env=environment, cwd=cwd,
                                     pass_fds=(events_write, go_read),
                                     preexec_fn=None if file_size_limit is None else _limit_file_size(file_size_limit),
                                     start_new_session=new_session)
        os.close(events_write)
        os.close(go_read)
        self._go = os.fdopen(go_write, "w", buffering=1)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(events_read,), daemon=True)
        self._reader.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "r") as fh:
            for line in fh:
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # the process closed its end: it exited

    def wait_for(self, pattern: str, count: int = 1) -> list[str]:
        """Read events until ``count`` lines matching ``pattern`` (fnmatch) have come; returns them."""
        matched = [line for line in self.seen if fnmatch.fnmatchcase(line, pattern)]
        while len(matched) < count:
            try:
                line = self._lines.get(timeout=WAIT_S)
            except queue.Empty:
                raise AssertionError(f"no event {pattern!r} within {WAIT_S} s; last events: {self.seen[-5:]}") from None
            if line is None:
                self._lines.put(None)
                raise AssertionError(f"the run ended (rc {self.proc.wait()}) before event {pattern!r}: "
                                     f"{self.stderr()[-2000:]}")
            self.seen.append(line)
            if fnmatch.fnmatchcase(line, pattern):
                matched.append(line)
        return matched

    def release(self, count: int = 1) -> None:
        """Let ``count`` held events go on."""
        try:
            self._go.write("go\n" * count)
        except BrokenPipeError:
            pass

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def interrupt_group(self) -> None:
        """SIGINT to the run's whole process group, as Ctrl-C at a terminal sends it (the run
        must have been started with ``new_session``)."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def children(self) -> list[int]:
        """Process ids of the run's child processes."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as fh:
                return [int(pid) for pid in fh.read().split()]
        except OSError:
            return []

    def finish(self, timeout: float = WAIT_S) -> int:
        """Wait for the exit (draining events meanwhile); returns the exit code."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        try:
            self._go.close()
        except BrokenPipeError:
            pass
        return code

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()

    def stdout(self) -> str:
        self._stdout.seek(0)
        return self._stdout.read()

    def __enter__(self) -> Announced:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._stderr.close()
        self._stdout.close()


def run_ok(args: Sequence[str], **kwargs) -> str:
    """Run to the end, assert exit code 0, return what it wrote to stderr."""
    with Announced(args, **kwargs) as run:
        code = run.finish()
        err = run.stderr()
        assert code == 0, err
        return err
