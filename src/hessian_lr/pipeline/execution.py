"""Parallel execution of the pipeline's tasks: worker processes, lanes (threads), progress.

:func:`executor` yields ``run(fn, tasks)`` that computes ``[fn(task, progress) for task in tasks]``
on ``config.workers`` processes with ``config.threads`` intra-op threads each. This process is one
of them: it runs the first task itself while the others go to a spawn pool (no start-up cost for
one worker, and none at all with one worker). A single process runs up to ``config.lanes`` tasks
at once in threads (:func:`in_lanes`): batched training spends its time in torch ops that release
the GIL, so lanes use the cores in parallel without a second process's start-up.

Progress flows one way: a task calls ``progress(event)``; in worker processes that puts the event
on a queue that a relay thread of this process drains into the caller's callback.

Ctrl-C (see :mod:`hessian_lr.interrupts`): worker processes never see it — they start with SIGINT
blocked and ignore it — and this process ends them; lanes stop at their next progress report and
are joined with SIGINT deferred. Either way what finished is on disk, and what did not is taken
over by the next run.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from hessian_lr import events, interrupts
from hessian_lr.training.placement import process_device, set_process_device

__all__ = ["ProgressEvent", "Progress", "no_progress", "executor", "in_lanes", "Runner"]


@dataclass(frozen=True)
class ProgressEvent:
    """What a task reports: ``kind`` is ``"epoch"`` (``count`` model-epochs done) or ``"trial"``
    (trial ``trial`` of ``task`` finished with ``value``, None if it diverged)."""

    task: str
    kind: str
    trial: int | None = None
    value: float | None = None
    count: int = 1


Progress = Callable[[ProgressEvent], None]
Task = TypeVar("Task")
Runner = Callable[[Callable[[Any, Progress], Any], Sequence[Any]], list[Any]]


def no_progress(event: ProgressEvent) -> None:
    pass


_worker_progress: Progress = no_progress


def _init_worker(queue: Any, threads: int, devices: Any = None) -> None:
    global _worker_progress
    # Ctrl-C is the launching process's to handle: it ends the workers (their unfinished trials
    # are resumed by the next run). They start with SIGINT blocked (see _spawning) and ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _worker_progress = queue.put
    if devices is not None:  # compare --devices: each worker process takes a device of its own
        set_process_device(devices.get())


def _in_worker(fn: Callable[[Any, Progress], Any], task: Any) -> Any:
    """How a worker process runs a task: with the queue as its progress callback."""
    return fn(task, _worker_progress)


class _LanesStopped(Exception):
    """Raised in a lane at its next progress report once another lane failed or was interrupted."""


def in_lanes(lanes: int, fn: Callable[[Task, Progress], Any], tasks: Sequence[Task], progress: Progress) -> list[Any]:
    """``[fn(task, progress) for task in tasks]``, up to ``lanes`` at once: this thread and
    ``lanes - 1`` more take the tasks in order.

    When a task fails, or this thread is interrupted (Ctrl-C), the other lanes stop at their
    next progress report (every epoch) and are joined before the error is raised — with SIGINT
    deferred while they are joined, and again by :func:`hessian_lr.interrupts.run_cleanups` if
    the command ends first — so no thread is ever left inside torch while the interpreter exits,
    and everything finished is kept."""
    if lanes <= 1 or len(tasks) <= 1:
        return [fn(task, progress) for task in tasks]
    results: list[Any] = [None] * len(tasks)
    errors: dict[int, BaseException] = {}
    next_index = iter(range(len(tasks)))
    take = threading.Lock()
    stop = threading.Event()

    def checked(event: ProgressEvent) -> None:
        if stop.is_set():
            raise _LanesStopped
        interrupts.check()
        progress(event)

    def lane() -> None:
        while not stop.is_set():
            with take:
                index = next(next_index, None)
            if index is None:
                return
            try:
                results[index] = fn(tasks[index], checked)
            except _LanesStopped:
                return
            except BaseException as exc:  # noqa: BLE001 - raised by the calling thread below
                errors[index] = exc
                stop_all()
                return

    def stop_all() -> None:
        stop.set()
        events.release_all()  # a lane held at an announced event goes on to its next report

    # Not daemons: a thread still in torch when the interpreter finalizes aborts it (exit -6);
    # the interpreter waits for these, and every path below stops them first.
    others = [threading.Thread(target=lane, name=f"hessian-lr-lane-{i + 1}")
              for i in range(min(lanes, len(tasks)) - 1)]

    def stop_and_join() -> None:
        stop_all()
        for thread in others:
            if thread.is_alive():
                thread.join()

    token = interrupts.register_cleanup(stop_and_join)
    try:
        with interrupts.deferred():
            for thread in others:
                thread.start()
        lane()
        events.announce("lanes-joining")
        for thread in others:
            thread.join()
    except BaseException:
        with interrupts.deferred():
            stop_and_join()
        raise
    finally:
        interrupts.unregister_cleanup(token)
    if errors:
        raise errors[min(errors)]
    return results


@contextmanager
def executor(workers: int, threads: int, lanes: int, progress: Progress,
             devices: Sequence[str] = ()) -> Iterator[Runner]:
    """``run(fn, tasks)`` on ``workers`` processes of ``threads`` intra-op threads each (see the
    module docstring); one process runs ``lanes`` tasks at once in threads. With ``devices`` (one
    per worker) this process trains on the first and each worker process on one of the others."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    previous_device = process_device()
    if devices:
        set_process_device(devices[0])
    helpers = workers - 1
    if helpers < 1:
        try:
            yield lambda fn, tasks: in_lanes(lanes, fn, list(tasks), progress)
        finally:
            torch.set_num_threads(previous_threads)
            set_process_device(previous_device)
        return
    ctx = mp.get_context("spawn")  # fork is unsafe once torch's thread pools exist
    queue = ctx.Queue()
    device_queue = None
    if devices:
        device_queue = ctx.Queue()
        for device in devices[1:]:
            device_queue.put(device)

    def relay() -> None:
        while (event := queue.get()) is not None:
            progress(event)

    listener = threading.Thread(target=relay, daemon=True)
    listener.start()
    pool = ProcessPoolExecutor(helpers, mp_context=ctx, initializer=_init_worker,
                               initargs=(queue, threads, device_queue))

    def end_workers() -> None:
        """Stop the workers now (an error or Ctrl-C here): their RUNNING trials stay in the
        storage, owned by a dead process, for the next run to take over."""
        processes = list((getattr(pool, "_processes", None) or {}).values()) or mp.active_children()
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)

    def run(fn: Callable[[Any, Progress], Any], tasks: Sequence[Any]) -> list[Any]:
        if not tasks:
            return []
        with interrupts.deferred(), _spawning():
            futures = [pool.submit(_in_worker, fn, task) for task in tasks[1:]]
        first = fn(tasks[0], progress)
        return [first, *(future.result() for future in futures)]

    token = interrupts.register_cleanup(end_workers)
    try:
        yield run
    except BaseException:
        with interrupts.deferred():
            end_workers()
        raise
    finally:
        with interrupts.deferred():
            # Don't wait for the workers to exit (torch's teardown takes ~1 s): outputs come first.
            pool.shutdown(wait=False, cancel_futures=True)
            queue.put(None)
            listener.join(timeout=5)
            torch.set_num_threads(previous_threads)
            set_process_device(previous_device)
        interrupts.unregister_cleanup(token)


@contextmanager
def _spawning() -> Iterator[None]:
    """SIGINT blocked in this thread while worker processes are started: a child inherits the
    mask through fork and exec, so a Ctrl-C at the terminal (sent to the whole process group)
    never reaches a worker — not even before its initializer runs. This process still gets it
    (another thread takes it, or it waits until the mask is lifted)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
