"""Known-answer tests for the curvature estimators beyond grad-diff (and grad-diff's own answer).

Quadratics have known Hessians: on ``L = ½ Σ H_i θ_i²`` (noiseless, diagonal) ``g = H θ``, so
``g_t − g_{t−1} = H Δθ`` exactly and the secant ratio ``y/s`` is exactly ``H``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from optim_helpers import tiny_mlp, train_through_backward
from torch import nn

from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim.estimators import (
    ESTIMATORS,
    CurvatureEstimator,
    GaussNewtonBartlett,
    GradDiff,
    Hutchinson,
    Secant,
    SecantRMS,
    SquaredGrad,
    get_estimator,
)
from hessian_lr.optim.hvp import gauss_newton_bartlett_sample, hutchinson_sample

D = torch.float64
H_DIAG = torch.tensor([0.5, 1.0, 2.0, 3.5, 5.0, 0.8], dtype=D)


def _diag_quadratic_run(estimator, steps, *, beta=0.9, lr=0.05, eps=1e-16):
    """SGD-wrapped run on ½ Σ H θ²; returns the parameter, optimizer and θ before every step."""
    theta = nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 1.5, -0.7, 3.0], dtype=D))
    opt = HessianLRAdaptation(torch.optim.SGD([theta], lr=lr), beta=beta, eps=eps, estimator=estimator)
    history = []
    for _ in range(steps):
        history.append(theta.detach().clone())
        opt.zero_grad()
        (0.5 * (H_DIAG * theta**2).sum()).backward()
        opt.step()
    return theta, opt, history


def test_registry_names_and_defaults():
    assert set(ESTIMATORS) == {"grad-diff", "squared-grad", "secant", "secant-rms", "hutchinson", "gauss-newton"}
    for name, cls in ESTIMATORS.items():
        est = get_estimator(name)
        assert isinstance(est, cls) and est.name == name
        assert cls.__doc__ and "Cost" in cls.__doc__, name  # every estimator states its cost
    assert {n: ESTIMATORS[n].estimate_power for n in ESTIMATORS} == {
        "grad-diff": 2.0, "squared-grad": 2.0, "secant": 1.0, "secant-rms": 1.0, "hutchinson": 1.0, "gauss-newton": 1.0,
    }
    assert HessianLRAdaptation(torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)).estimator.name == "grad-diff"


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_grad_diff_is_squared_curvature_times_step(beta):
    """Noiseless diagonal quadratic: grad-diff's average is the EMA of (H·Δθ)², exactly."""
    theta, opt, history = _diag_quadratic_run("grad-diff", 8, beta=beta, eps=1e-8)
    expected = torch.zeros_like(theta)
    prev_g = torch.zeros_like(theta)
    for t, th in enumerate(history, start=1):
        g = H_DIAG * th
        d = g - prev_g
        if t > 1:  # the first difference is g_1 itself (g_0 := 0)
            torch.testing.assert_close(d, H_DIAG * (th - history[t - 2]), rtol=1e-14, atol=0)
        expected = beta * expected + (1 - beta) * d**2
        prev_g = g
    estimate = opt.curvature_estimate(theta)
    torch.testing.assert_close(estimate, expected / (1 - beta**8), rtol=1e-12, atol=0)
    if beta == 0.0:
        torch.testing.assert_close(estimate, (H_DIAG * (history[-1] - history[-2])) ** 2, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["secant", "secant-rms"])
def test_secant_recovers_the_diagonal(name):
    theta, opt, history = _diag_quadratic_run(name, 12)
    torch.testing.assert_close(opt.curvature_estimate(theta), H_DIAG, rtol=1e-6, atol=0)
    # The gradient scale: g / sqrt(max(c, c_min)^2 + eps) with c = H — a diagonal Newton step, so
    # SGD(lr) contracts every coordinate by exactly (1 - lr) per step once the curvature is known.
    ratios = history[-1] / history[-2]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 1 - 0.05), rtol=1e-9, atol=0)


def test_secant_first_step_and_safeguards():
    est = Secant(min_curvature=0.25, init_curvature=1.0)
    p = torch.tensor([1.0, 2.0, 0.0, 3.0], dtype=D)
    state = dict(step=0, **est.init(p, D))
    g1 = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=D)
    grad = g1.clone()
    est.precondition_([grad], [p], [state], beta=0.9, eps=1e-300, step=1, foreach=False)
    torch.testing.assert_close(grad, g1)  # no pair yet: init_curvature 1 passes the gradient through
    # Second step: coordinate 0 moved by 0.5 (ratio |y/s| = 4), coordinate 1 by 1e-7 relative (below the
    # 1e-5 tolerance: no pair), coordinate 2 not at all, coordinate 3 by 1 with y = 0.1 (ratio 0.1 < floor).
    p2 = torch.tensor([1.5, 2.0 + 2e-7, 0.0, 4.0], dtype=D)
    g2 = torch.tensor([3.0, 5.0, 7.0, 1.1], dtype=D)
    grad = g2.clone()
    est.precondition_([grad], [p2], [state], beta=0.9, eps=1e-300, step=2, foreach=False)
    torch.testing.assert_close(est.estimate(state, beta=0.9, step=2), torch.tensor([4.0, 0.0, 0.0, 0.1], dtype=D))
    # Unpaired coordinates use the mean curvature of the paired ones, (4 + 0.1) / 2; the floor is 0.25.
    torch.testing.assert_close(grad, g2 / torch.tensor([4.0, 2.05, 2.05, 0.25], dtype=D))


def test_squared_grad_matches_its_formula_and_foreach():
    torch.manual_seed(0)
    shapes = [(5, 3), (7,), (2, 2, 2)]
    params = [torch.randn(s, dtype=D) for s in shapes]
    est = SquaredGrad()
    single = [dict(step=0, **est.init(p, D)) for p in params]
    multi = copy.deepcopy(single)
    h_ref = [torch.zeros_like(p) for p in params]
    for step in range(1, 5):
        grads = [torch.randn(s, dtype=D) for s in shapes]
        a, b = [g.clone() for g in grads], [g.clone() for g in grads]
        est.precondition_(a, params, single, beta=0.9, eps=1e-8, step=step, foreach=False)
        est.precondition_(b, params, multi, beta=0.9, eps=1e-8, step=step, foreach=True)
        for g, x, y, h in zip(grads, a, b, h_ref):
            h.mul_(0.9).add_(0.1 * g**2)
            torch.testing.assert_close(x, g / torch.sqrt(h / (1 - 0.9**step) + 1e-8), rtol=1e-13, atol=0)
            torch.testing.assert_close(x, y, rtol=1e-13, atol=0)


def _dense_quadratic(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=D)
    return m @ m.T / n + torch.diag(torch.rand(n, generator=g, dtype=D))


def test_hutchinson_sample_is_unbiased_on_a_dense_quadratic():
    """Mean of N probes of z ⊙ Az: each entry within 5 standard errors, sqrt(Σ_{j≠i} A_ij² / N)."""
    a = _dense_quadratic()
    theta = torch.randn(a.shape[0], dtype=D, requires_grad=True)
    n = 4000
    grads, samples = hutchinson_sample(0.5 * theta @ a @ theta, [theta], n_samples=n,
                                       generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(grads[0], a @ theta.detach())
    assert not grads[0].requires_grad and grads[0].grad_fn is None
    off = (a**2).sum(1) - a.diagonal() ** 2
    z = (samples[0] - a.diagonal()) / (off / n).sqrt()
    assert z.abs().max() < 5, z
    # A loss that is linear in a parameter has no curvature there: zero sample, not an error.
    w = torch.randn(3, dtype=D, requires_grad=True)
    _, lin = hutchinson_sample((w * 2.0).sum() + (w**2).sum(), [w], n_samples=3)
    torch.testing.assert_close(lin[0], torch.full((3,), 2.0, dtype=D))


def test_hutchinson_estimator_averages_to_the_diagonal():
    """Through the wrapper (SGD lr=0 keeps θ fixed): the EMA of probe means, bias-corrected, within
    5 standard errors; the EMA's variance is σ²/m · (1−β)² Σ β^{2k} / (1−β^n)²."""
    a = _dense_quadratic()
    torch.manual_seed(3)
    theta = nn.Parameter(torch.randn(a.shape[0], dtype=D))
    m, beta, steps = 20, 0.95, 300
    opt = HessianLRAdaptation(torch.optim.SGD([theta], lr=0.0), beta=beta, eps=1e-16,
                              estimator=Hutchinson(n_samples=m))
    for _ in range(steps):
        opt.zero_grad()
        opt.backward(0.5 * theta @ a @ theta)
        assert theta.grad.grad_fn is None and not theta.grad.requires_grad  # the graph is gone
        opt.step()
    assert opt.state[theta]["curvature_updates"] == steps
    off = (a**2).sum(1) - a.diagonal() ** 2
    weight = (1 - beta) ** 2 * sum(beta ** (2 * k) for k in range(steps)) / (1 - beta**steps) ** 2
    z = (opt.curvature_estimate(theta) - a.diagonal()) / (off / m * weight).sqrt()
    assert z.abs().max() < 5, z


def test_gauss_newton_bartlett_is_unbiased_for_the_gn_diagonal():
    from hessian_lr.analysis.exact import gauss_newton_diagonal_ce

    model = tiny_mlp(dtype=D)
    x = torch.randn(16, 5, dtype=D, generator=torch.Generator().manual_seed(2))
    exact = torch.cat([d.reshape(-1) for d in gauss_newton_diagonal_ce(model, x)])
    logits = model(x)
    params = list(model.parameters())
    rng = torch.Generator().manual_seed(4)
    draws = torch.stack([
        torch.cat([u.reshape(-1) for u in gauss_newton_bartlett_sample(logits, params, generator=rng, retain_graph=True)])
        for _ in range(3000)
    ])
    se = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - exact).abs() <= 5 * se + 1e-12).all()
    assert (draws >= 0).all()


def test_update_every_and_protocol_errors():
    model = tiny_mlp()
    x, y = torch.randn(8, 5), torch.randint(0, 4, (8,))
    opt = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.01), estimator=Hutchinson(update_every=3))
    for _ in range(7):
        opt.zero_grad()
        opt.backward(nn.functional.cross_entropy(model(x), y))
        opt.step()
    assert all(opt.state[p]["curvature_updates"] == 3 for p in model.parameters())  # steps 1, 4, 7
    assert all(opt.state[p]["step"] == 7 for p in model.parameters())

    fresh = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.01), estimator="hutchinson")
    nn.functional.cross_entropy(model(x), y).backward()
    with pytest.raises(RuntimeError, match=r"optimizer\.backward\(loss\)"):
        fresh.step()
    gn = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.01), estimator="gauss-newton")
    with pytest.raises(ValueError, match="logits"):
        gn.backward(nn.functional.cross_entropy(model(x), y))


def test_gradient_only_backward_is_plain_backward():
    model, twin = tiny_mlp(), tiny_mlp()
    x, y = torch.randn(8, 5), torch.randint(0, 4, (8,))
    opt = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.01), estimator="secant")
    opt.backward(nn.functional.cross_entropy(model(x), y))
    nn.functional.cross_entropy(twin(x), y).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad)
    assert not opt.state  # no state is created before the first step


def test_gauss_newton_backward_gives_the_plain_gradient():
    model, twin = tiny_mlp(), tiny_mlp()
    x, y = torch.randn(8, 5), torch.randint(0, 4, (8,))
    opt = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.01), estimator="gauss-newton")
    logits = model(x)
    opt.backward(nn.functional.cross_entropy(logits, y), logits=logits)
    nn.functional.cross_entropy(twin(x), y).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
        assert opt.state[p]["curvature_updates"] == 1 and (opt.state[p]["h"] >= 0).all()


def test_nonfinite_sample_is_dropped():
    model = tiny_mlp()
    opt = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.01), estimator="hutchinson", nonfinite="skip")
    x, y = torch.randn(8, 5), torch.randint(0, 4, (8,))
    x[0, 0] = float("nan")
    opt.backward(nn.functional.cross_entropy(model(x), y))
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(opt.state[p]["curvature_updates"] == 0 for p in model.parameters())
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_spatial_average_over_kernel_dims():
    est = Hutchinson(spatial_average=True)
    w = torch.zeros(2, 3, 2, 2)
    state = est.init(w, torch.float32)
    sample = torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2)
    est.absorb_(state, sample, beta=0.0)
    expected = sample.mean(dim=(2, 3), keepdim=True).expand_as(sample)
    torch.testing.assert_close(est.estimate(state, beta=0.0, step=1), expected)
    bias_state = est.init(torch.zeros(3), torch.float32)
    est.absorb_(bias_state, torch.tensor([1.0, -2.0, 3.0]), beta=0.0)  # < 3 dims: untouched
    torch.testing.assert_close(est.estimate(bias_state, beta=0.0, step=1), torch.tensor([1.0, -2.0, 3.0]))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_state_dict_round_trip_continues_identically(name, base):
    def build(model):
        inner = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if base == "sgd"
                 else torch.optim.Adam(model.parameters(), lr=1e-3))
        return HessianLRAdaptation(inner, eps=1e-12, estimator=get_estimator(name))

    model = tiny_mlp()
    opt = build(model)
    train_through_backward(model, opt, 5, 0)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())

    twin = tiny_mlp(seed=9)
    twin.load_state_dict(saved_model)
    twin_opt = build(twin)
    twin_opt.load_state_dict(saved_opt)

    # No reseeding: hutchinson / gauss-newton draw from their own generator, restored by the load.
    train_through_backward(model, opt, 6, 5)
    torch.randn(5)  # the global RNG moved on in between
    train_through_backward(twin, twin_opt, 6, 5)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q), (name, (p - q).abs().max())
    for p, q in zip(model.parameters(), twin.parameters()):
        for key in opt.estimator.state_keys:
            assert torch.equal(opt.state[p][key], twin_opt.state[q][key])
        assert opt.state[p]["step"] == twin_opt.state[q]["step"] == 11


@pytest.mark.parametrize("cls", [SquaredGrad, Secant, SecantRMS, Hutchinson, GaussNewtonBartlett])
def test_low_precision_params_keep_float32_state(cls):
    torch.manual_seed(0)
    model = tiny_mlp().to(torch.bfloat16)
    opt = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.01), eps=1e-12, estimator=cls())
    x, y = torch.randn(8, 5, dtype=torch.bfloat16), torch.randint(0, 4, (8,))
    for _ in range(3):
        logits = model(x)
        opt.zero_grad()
        opt.backward(nn.functional.cross_entropy(logits.float(), y), logits=logits)
        opt.step()
    for p in model.parameters():
        assert p.dtype == torch.bfloat16 and p.grad.dtype == torch.bfloat16
        assert all(opt.state[p][k].dtype == torch.float32 for k in cls.state_keys)
        assert torch.isfinite(p).all()


def test_custom_estimator_object_passes_through():
    est = Secant(min_curvature=1e-3)
    opt = HessianLRAdaptation(torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1), estimator=est)
    assert opt.estimator is est and isinstance(est, CurvatureEstimator)
    assert get_estimator(GradDiff()).name == "grad-diff"
    with pytest.raises(ValueError):
        Hutchinson(update_every=0)
    with pytest.raises(ValueError):
        Hutchinson(n_samples=0)


def test_diverged_logits_give_a_clean_floating_point_error():
    model = tiny_mlp()
    opt = HessianLRAdaptation(torch.optim.SGD(model.parameters(), lr=0.01), estimator="gauss-newton")
    x, y = torch.randn(8, 5), torch.randint(0, 4, (8,))
    x[0, 0] = float("inf")
    logits = model(x)
    opt.backward(nn.functional.cross_entropy(logits, y), logits=logits)  # no multinomial error
    assert all(opt.state[p]["curvature_updates"] == 0 for p in model.parameters())
    with pytest.raises(FloatingPointError):
        opt.step()
