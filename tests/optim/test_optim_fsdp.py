"""FSDP2 on CPU (``fully_shard``, gloo, 2 processes): the wrapper trains sharded parameters
(DTensors: each rank updates its shard; the kernel and the eager ops both run on the local shards)
like an unsharded run, and saves and loads through DCP across a restart of the processes.

Each rank trains on half of every batch; FSDP2 averages the gradients over the ranks, so this is
full-batch training of one model. The ``train`` run saves a DCP checkpoint after ``N`` steps and
goes on to ``N + M``; the ``resume`` run -- new processes, a model built from other weights --
loads the checkpoint and trains ``M`` steps, which must end exactly where ``train`` ended.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from dist_helpers import init_gloo, rendezvous, save_atomically, spawn

from hessian_lr.optim import HessianLRAdaptation

N, M = 3, 3
PATHS = ("torch", "kernel")  # both implementations train side by side in the same processes
OTHER_ESTIMATORS = ("squared-grad", "secant")  # run on the DTensors themselves (secant: a global mean)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 15), torch.nn.Tanh(), torch.nn.Linear(15, 3)
    ).double()  # 15 and 3 rows: uneven shards over 2 ranks


def _batch(t: int):
    g = torch.Generator().manual_seed(t)
    return torch.randn(32, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (32,), generator=g)


def _opt(model: torch.nn.Module, path: str, estimator: str = "grad-diff") -> HessianLRAdaptation:
    base = torch.optim.Adam(model.parameters(), lr=1e-2)
    return HessianLRAdaptation(base, beta=0.9, estimator=estimator, fused=path == "kernel")


def _train(model, opt, steps, start, rank=None):
    for t in range(start, start + steps):
        x, y = _batch(t)
        if rank is not None:
            x, y = x[rank * 16:(rank + 1) * 16], y[rank * 16:(rank + 1) * 16]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _worker(rank: int, rendezvous_path: str, out, phase: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from hessian_lr.optim import kernel

    init_gloo(rank, rendezvous_path)
    try:
        kernel.load(compile=False)  # built by the parent (conftest) when the kernel path is tested
        results = {}
        for path in PATHS:
            model = _model(seed=0 if phase == "train" else 11)
            for layer in (model[0], model[2], model[4]):
                fully_shard(layer)
            fully_shard(model)
            opt = _opt(model, path)
            checkpoint = out / f"ckpt-{path}"
            if phase == "resume":
                sd = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
                dcp.load(sd, checkpoint_id=checkpoint)
                set_model_state_dict(model, sd["model"])
                set_optimizer_state_dict(model, opt, sd["optim"])
                _train(model, opt, M, N, rank)
            else:
                _train(model, opt, N, 0, rank)
                assert all(isinstance(p, DTensor) and isinstance(opt.state[p]["h"], DTensor) for p in model.parameters())
                results[f"{path}@N"] = [p.full_tensor() for p in model.parameters()]
                sd = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
                dcp.save(sd, checkpoint_id=checkpoint)
                _train(model, opt, M, N, rank)
            results[path] = [p.full_tensor() for p in model.parameters()]
            results[f"{path}:uses kernel"] = opt.uses_fused_kernel
        if phase == "train":
            for estimator in OTHER_ESTIMATORS:
                model = _model()
                fully_shard(model)
                opt = _opt(model, "torch", estimator)
                _train(model, opt, N, 0, rank)
                results[estimator] = [p.full_tensor() for p in model.parameters()]
            _nonfinite_on_one_rank(rank, out, fully_shard)
        if rank == 0:
            save_atomically(results, out / f"{phase}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _nonfinite_on_one_rank(rank: int, out, fully_shard) -> None:
    """An inf in rank 1's shard only: both ranks skip the step ("skip") or both raise naming the
    same parameter ("error") -- never one rank stepping while the other waits."""
    seen = {}
    for policy in ("skip", "error"):
        model = _model()
        fully_shard(model)
        opt = HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-2), nonfinite=policy)
        _train(model, opt, 1, 0, rank)
        opt.zero_grad()
        x, y = _batch(1)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if rank == 1:
            model[2].weight.grad.to_local()[0, 0] = float("inf")
        try:
            opt.step()
            seen[policy] = [opt.state[p]["step"] for p in model.parameters()]
        except FloatingPointError as exc:
            seen[policy] = str(exc)
    save_atomically(seen, out / f"nonfinite-rank{rank}.pt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from optim_helpers import kernel_or_skip

    try:
        kernel_or_skip()
    except pytest.skip.Exception:
        pass  # the "kernel" model then runs the eager path; its test skips below
    out = tmp_path_factory.mktemp("fsdp")
    spawn(_worker, (rendezvous(), out, "train"), [out / "train.pt", out / "nonfinite-rank0.pt", out / "nonfinite-rank1.pt"])
    return out


@pytest.mark.parametrize("path", PATHS)
def test_fsdp2_matches_unsharded_training(trained, path):
    got = torch.load(trained / "train.pt", weights_only=True)
    if path == "kernel" and not got["kernel:uses kernel"]:
        pytest.skip("compiled kernel unavailable")
    model = _model()
    opt = _opt(model, path)
    _train(model, opt, N, 0)
    for a, b in zip(got[f"{path}@N"], model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-12)
    _train(model, opt, M, N)
    for a, b in zip(got[path], model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-12)
    assert max((a - b).abs().max().item() for a, b in zip(got[path], _model().parameters())) > 1e-3


def test_fsdp2_dcp_checkpoint_resumes_exactly_after_a_restart(trained):
    spawn(_worker, (rendezvous(), trained, "resume"), [trained / "resume.pt"])
    straight = torch.load(trained / "train.pt", weights_only=True)
    resumed = torch.load(trained / "resume.pt", weights_only=True)
    for path in PATHS:
        for a, b in zip(resumed[path], straight[path]):
            assert torch.equal(a, b), (path, (a - b).abs().max().item())


def test_fsdp2_ranks_agree_on_a_nonfinite_gradient(trained):
    ranks = [torch.load(trained / f"nonfinite-rank{r}.pt", weights_only=True) for r in (0, 1)]
    for seen in ranks:
        assert seen["skip"] == [1] * 6  # the step was skipped on both ranks
        assert "(group 0, index 2, shape (15, 16))" in seen["error"]  # model[2].weight, named by both
    assert ranks[0]["error"] == ranks[1]["error"]


@pytest.mark.parametrize("estimator", OTHER_ESTIMATORS)
def test_fsdp2_other_gradient_estimators_match_unsharded_training(trained, estimator):
    got = torch.load(trained / "train.pt", weights_only=True)[estimator]
    model = _model()
    _train(model, _opt(model, "torch", estimator), N, 0)
    for a, b in zip(got, model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-12)
