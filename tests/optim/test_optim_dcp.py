"""torch.distributed.checkpoint (DCP) on one process: ``get_optimizer_state_dict`` keeps the base
optimizer's state, ``set_optimizer_state_dict`` loads it back, and training goes on exactly as if it
had never stopped (what FSDP2, torchtitan and Lightning's ModelParallel strategy rely on)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed.checkpoint as dcp
from optim_helpers import assert_same, mlp, params_of, train
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from hessian_lr.optim import HessianLRAdaptation

N, M = 3, 4


def _build(path, seed=0):
    model = mlp(seed)
    base = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, HessianLRAdaptation(base, beta=0.9, fused=path == "kernel")


def test_get_optimizer_state_dict_keeps_the_base_state(path):
    model, opt = _build(path)
    train(model, opt, N)
    osd = get_optimizer_state_dict(model, opt)
    assert set(osd["state"]) == {name for name, _ in model.named_parameters()}
    entry = osd["state"]["0.weight"]
    assert {"step", "exp_avg", "exp_avg_sq"} <= set(entry)  # Adam's moments, kept
    assert entry["curvature"]["step"] == N and set(entry["curvature"]) == {"step", "prev_grad", "h"}
    assert torch.equal(entry["exp_avg"], opt.base_optimizer.state[model[0].weight]["exp_avg"])
    assert osd["param_groups"][0]["curvature_estimator"]["name"] == "grad-diff"


@pytest.mark.parametrize("through_disk", [False, True], ids=["in-memory", "dcp.save/load"])
def test_dcp_round_trip_continues_exactly(tmp_path, path, through_disk):
    model, opt = _build(path)
    train(model, opt, N + M)
    straight = params_of(model)

    model, opt = _build(path)
    train(model, opt, N)
    saved = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    if through_disk:
        dcp.save(saved, checkpoint_id=tmp_path)
    else:
        saved = copy.deepcopy(saved)
    del model, opt

    model, opt = _build(path, seed=7)  # other weights: the checkpoint must bring everything back
    if through_disk:
        saved = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
        dcp.load(saved, checkpoint_id=tmp_path)
    set_model_state_dict(model, saved["model"])
    set_optimizer_state_dict(model, opt, saved["optim"])
    assert all(s["step"] == N for s in opt.state.values())
    assert all(opt.base_optimizer.state[p]["step"] == N for p in model.parameters())
    train(model, opt, M, start=N)
    assert_same(params_of(model), straight)
