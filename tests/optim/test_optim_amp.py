"""Mixed precision: GradScaler-skipped steps leave the curvature state alone."""

from __future__ import annotations

import pytest
import torch
from optim_helpers import batch, mlp

from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim import functional as F


def _snapshot(opt):
    return {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for p, s in opt.state.items()}


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16])
def test_gradscaler_skipped_step_keeps_curvature_state(path, amp_dtype):
    model = mlp()
    opt = HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-2), fused=path == "kernel")
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    def scaled_backward(t, poison=False):
        opt.zero_grad()
        x, y = batch(t)
        with torch.autocast("cpu", dtype=amp_dtype):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if poison:
            model[2].weight.grad[0, 0] = float("inf")

    # A normal scaled step: the state sees the *unscaled* gradient.
    scaled_backward(0)
    scaler.unscale_(opt)
    raw = {p: p.grad.clone() for p in model.parameters()}
    scaler.step(opt)
    scaler.update()
    for p in model.parameters():
        prev, h, g = torch.zeros_like(p), torch.zeros_like(p), raw[p].clone()
        F.single_tensor_grad_diff_(g, prev, h, beta=0.99, eps=1e-8, step=1)
        assert torch.equal(opt.state[p]["prev_grad"], raw[p]) and torch.equal(opt.state[p]["h"], h)

    # An overflowing step: the scaler skips opt.step(); nothing of ours changes.
    before, params = _snapshot(opt), [p.detach().clone() for p in model.parameters()]
    scaled_backward(1, poison=True)
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 512.0
    for p, saved in before.items():
        assert opt.state[p]["step"] == saved["step"] == 1
        assert torch.equal(opt.state[p]["h"], saved["h"]) and torch.equal(opt.state[p]["prev_grad"], saved["prev_grad"])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))

    scaled_backward(2)
    scaler.step(opt)
    scaler.update()
    assert all(s["step"] == 2 and torch.isfinite(s["h"]).all() for s in opt.state.values())


def test_autocast_bf16_params_train(path):
    model = mlp(dtype=torch.bfloat16)
    opt = HessianLRAdaptation(torch.optim.AdamW(model.parameters(), lr=1e-2), fused=path == "kernel")
    losses = []
    for t in range(30):
        opt.zero_grad()
        x, y = batch(t % 3, torch.bfloat16)
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(s["h"].dtype == torch.float32 for s in opt.state.values())
    assert losses[-1] < losses[0]
