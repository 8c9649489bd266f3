"""Running a test body in 2 gloo processes on loopback, robustly (the DDP, FSDP2 and DCP tests)."""

from __future__ import annotations

import datetime
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def rendezvous() -> str:
    """A fresh rendezvous for one process group: a file path for torch's FileStore. (A TCP port
    found free here could be taken by another test before the ranks bind it — in a loaded full run
    one rank then died with "terminate called without an active exception"; gloo's own
    connections take ports the kernel hands out.)"""
    handle, path = tempfile.mkstemp(prefix="hessian-lr-gloo-")
    os.close(handle)
    os.unlink(path)  # FileStore creates it; a leftover file from another group would confuse it
    return path


def init_gloo(rank: int, rendezvous: str) -> None:
    """One process of the group: 1 intra-op thread (the machine has 2 cores for 2 ranks)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))


def save_atomically(obj, path: Path) -> None:
    """The parent reads only complete files."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def spawn(worker: Callable[..., None], args: tuple, results: list[Path], *, timeout: float = 120) -> None:
    """Run ``worker(rank, *args)`` on 2 processes until every file in ``results`` exists.

    Guards against gloo teardown hangs (seen ~1 run in 5 on a loaded 2-core machine, after the
    results were written): once the results exist the ranks get 15 s to exit, then are stopped.
    A rank that fails re-raises its error here.
    """
    ctx = mp.spawn(worker, args=args, nprocs=WORLD, join=False)
    deadline, written = time.monotonic() + timeout, None
    while not ctx.join(timeout=0.5):
        if written is None and all(path.exists() for path in results):
            written = time.monotonic()
        if (written is not None and time.monotonic() - written > 15) or time.monotonic() > deadline:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.terminate()
            break
    missing = [str(path) for path in results if not path.exists()]
    assert not missing, f"the ranks did not write {missing}"
