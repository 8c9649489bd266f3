"""Checkpoints: save, rebuild everything, load, continue -- bit-identical to never stopping."""

from __future__ import annotations

import copy

import pytest
import torch
from optim_helpers import assert_same, mlp, params_of, tiny_mlp, train, train_through_backward

from hessian_lr.optim import HessianLRAdaptation


def _build(dtype, path, **kw):
    model = mlp(dtype=dtype)
    base = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt = HessianLRAdaptation(base, beta=0.9, fused=path == "kernel", **kw)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    return model, opt, sched


def _train(model, opt, sched, steps, start=0):
    for t in range(start, start + steps):
        train(model, opt, 1, start=t)
        sched.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resume_is_bit_identical(tmp_path, path, dtype):
    n, m = 4, 5
    model, opt, sched = _build(dtype, path)
    _train(model, opt, sched, n + m)
    straight = params_of(model)

    model, opt, sched = _build(dtype, path)
    _train(model, opt, sched, n)
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "ckpt.pt"
    )
    del model, opt, sched

    model, opt, sched = _build(dtype, path)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    sched.load_state_dict(ckpt["sched"])
    assert all(s["step"] == n for s in opt.state.values())
    assert opt.param_groups[0]["lr"] == 1e-2 * 0.5
    _train(model, opt, sched, m, start=n)
    assert_same(params_of(model), straight)


def test_state_dict_layout_and_is_a_snapshot(path):
    model, opt, _ = _build(torch.float32, path)
    train(model, opt, 2)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}  # torch's layout: the base's state and ours per parameter
    assert sorted(sd["state"]) == list(range(6))
    entry = sd["state"][0]
    assert set(entry) == {"step", "exp_avg", "exp_avg_sq", "curvature"}  # Adam's, then ours
    assert set(entry["curvature"]) == {"step", "prev_grad", "h"} and entry["curvature"]["step"] == 2
    group = sd["param_groups"][0]
    assert group["curvature_beta"] == 0.9 and group["params"] == list(range(6))
    assert group["curvature_estimator"]["name"] == "grad-diff"
    h0 = entry["curvature"]["h"].clone()
    train(model, opt, 1, start=2)
    assert torch.equal(sd["state"][0]["curvature"]["h"], h0)  # a snapshot, not live references


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_low_precision_params_keep_float32_state_through_load(tmp_path, path, low):
    model, opt, _ = _build(low, path)
    train(model, opt, 2)
    assert all(s["h"].dtype == torch.float32 and s["prev_grad"].dtype == torch.float32 for s in opt.state.values())
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    model2, opt2, _ = _build(low, path)
    opt2.load_state_dict(torch.load(tmp_path / "o.pt", weights_only=True))
    # torch's own load_state_dict would cast floating state to the parameter's dtype; this doesn't.
    for p, q in zip(model.parameters(), model2.parameters()):
        for key in ("prev_grad", "h"):
            assert opt2.state[q][key].dtype == torch.float32
            assert torch.equal(opt2.state[q][key], opt.state[p][key])


def test_explicit_state_dtype_is_honoured_by_load(tmp_path, path):
    model, opt, _ = _build(torch.float32, path, state_dtype=torch.float64)
    train(model, opt, 2)
    assert all(s["h"].dtype == torch.float64 for s in opt.state.values())
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    model2, opt2, _ = _build(torch.float32, path)  # default policy would pick float32...
    model2.load_state_dict(model.state_dict())
    opt2.load_state_dict(torch.load(tmp_path / "o.pt", weights_only=True))
    assert all(s["h"].dtype == torch.float64 for s in opt2.state.values())  # ...the saved dtype wins
    train(model, opt, 2, start=2)
    train(model2, opt2, 2, start=2)
    assert_same(params_of(model), params_of(model2))


def test_load_rejects_foreign_or_mismatched_state():
    model, opt, _ = _build(torch.float32, "torch")
    with pytest.raises(ValueError, match="not a HessianLRAdaptation state dict"):
        opt.load_state_dict(opt.base_optimizer.state_dict())
    train(model, opt, 1)
    sd = opt.state_dict()
    sd["state"][0]["curvature"]["h"] = torch.zeros(3)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(sd)


# -- the estimator is part of the checkpoint (item 7) and its random stream too (item 8a) ---------
@pytest.mark.parametrize("name", ["hutchinson", "gauss-newton"])
def test_sampling_estimators_resume_bit_identically(tmp_path, name):
    """N + M steps == N steps, save, rebuild (a fresh estimator draws another seed), load, M steps:
    the probes / sampled labels continue from the saved generator state."""
    def build(model):
        return HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-2), estimator=name)

    torch.manual_seed(123)
    model = tiny_mlp()
    opt = build(model)
    train_through_backward(model, opt, 7, 0)
    straight = params_of(model)

    torch.manual_seed(123)
    model = tiny_mlp()
    opt = build(model)
    train_through_backward(model, opt, 3, 0)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    torch.manual_seed(999)  # the restarted process's RNG is elsewhere
    model = tiny_mlp(seed=5)
    opt = build(model)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    train_through_backward(model, opt, 4, 3)
    assert_same(params_of(model), straight)


def test_a_checkpoint_of_another_estimator_is_refused():
    model = tiny_mlp()
    grad_diff = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.1), estimator="grad-diff")
    model(torch.randn(4, 5)).sum().backward()
    grad_diff.step()
    sd = grad_diff.state_dict()
    squared = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.1), estimator="squared-grad")
    with pytest.raises(ValueError, match="saved with estimator 'grad-diff'.*uses 'squared-grad'"):
        squared.load_state_dict(sd)  # the keys fit ('h'), the meaning does not
    assert not squared.state  # nothing was loaded

    from hessian_lr.optim.estimators import Secant

    secant_sd = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.1), estimator=Secant()).state_dict()
    other = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.1), estimator=Secant(min_curvature=1e-3))
    with pytest.raises(ValueError, match="min_curvature"):
        other.load_state_dict(secant_sd)
    assert sd["param_groups"][0]["curvature_estimator"]["options"] == {}
    assert secant_sd["param_groups"][0]["curvature_estimator"] == {
        "name": "secant", "options": {"init_curvature": 1.0, "min_curvature": 1e-6, "rel_step_tol": 1e-5}, "state": {},
    }


def test_a_bare_base_state_dict_is_refused_and_the_base_loads_the_wrappers(path):
    model, opt, _ = _build(torch.float32, path)
    train(model, opt, 2)
    with pytest.raises(ValueError, match="not a HessianLRAdaptation state dict.*base_optimizer"):
        opt.load_state_dict(opt.base_optimizer.state_dict())
    # The other way round works: a wrapper checkpoint is a base checkpoint with extra entries.
    plain_model = mlp()
    plain = torch.optim.Adam(plain_model.parameters(), lr=1e-2)
    plain.load_state_dict(opt.state_dict())
    for p, q in zip(model.parameters(), plain_model.parameters()):
        assert torch.equal(plain.state[q]["exp_avg"], opt.base_optimizer.state[p]["exp_avg"])


def test_the_older_layout_with_a_separate_base_still_loads(path):
    model, opt, _ = _build(torch.float32, path)
    train(model, opt, 3)
    sd = opt.state_dict()
    older = {
        "state": {i: entry["curvature"] for i, entry in sd["state"].items()},
        "param_groups": sd["param_groups"],
        "base": opt.base_optimizer.state_dict(),
    }
    twin, twin_opt, _ = _build(torch.float32, path)
    twin.load_state_dict(model.state_dict())
    twin_opt.load_state_dict(copy.deepcopy(older))  # torch's loader keeps same-device tensors as they are
    train(model, opt, 2, start=3)
    train(twin, twin_opt, 2, start=3)
    assert_same(params_of(model), params_of(twin))
