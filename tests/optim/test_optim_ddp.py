"""DDP on CPU (gloo, 2 processes): half batches per rank == one process on the full batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
from dist_helpers import WORLD, init_gloo, rendezvous, save_atomically, spawn

from hessian_lr.optim import HessianLRAdaptation

STEPS = 6


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()


def _data(t: int):
    g = torch.Generator().manual_seed(t)
    return torch.randn(32, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (32,), generator=g)


def _opt(model, fused):
    return HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-2), beta=0.9, fused=fused)


def _worker(rank: int, rendezvous_path: str, out: str, fused: bool) -> None:
    init_gloo(rank, rendezvous_path)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_model())
        opt = _opt(model, fused)
        for t in range(STEPS):
            x, y = _data(t)
            half = slice(rank * 16, (rank + 1) * 16)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[half]), y[half]).backward()
            opt.step()
        save_atomically([p.detach() for p in model.module.parameters()], out / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_matches_single_process(tmp_path, path):
    fused = path == "kernel"
    spawn(_worker, (rendezvous(), tmp_path, fused), [tmp_path / f"rank{r}.pt" for r in range(WORLD)])
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1)), "ranks disagree"

    model = _model()
    opt = _opt(model, fused)
    for t in range(STEPS):
        x, y = _data(t)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for a, b in zip(rank0, model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-12)
    moved = max((a - b).abs().max().item() for a, b in zip(rank0, _model().parameters()))
    assert moved > 1e-3
