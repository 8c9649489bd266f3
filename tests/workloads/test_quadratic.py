"""The noisy quadratics: closed-form Hessian against autograd, exact noise statistics, and SGD's
closed-form expected loss against many simulated runs of the workloads themselves."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from hessian_lr.workloads import get_workload
from hessian_lr.workloads.quadratic import (
    BATCH_SIZE,
    EPOCHS,
    REFERENCE_LR,
    ROWS,
    random_rotation,
    sgd_expected_loss,
    spectrum,
)

NAMES = ("noisy-quadratic", "rotated-quadratic")


@pytest.mark.parametrize("name", NAMES)
def test_closed_form_hessian_matches_autograd(name):
    work = get_workload(name)
    torch.manual_seed(3)
    model = work.build_model().double()
    x = work.data.x_train[:37].double()
    y = work.data.y_train[:37].double()
    theta = model.theta.detach().clone()

    def objective(t):
        return work.loss_fn(functional_call(model, {"theta": t}, (x,)), y)

    full = torch.autograd.functional.hessian(objective, theta)
    torch.testing.assert_close(full, model.hessian(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.hessian_diagonal(), full.diagonal(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.linalg.eigvalsh(full), spectrum().sort().values, rtol=1e-10, atol=1e-12)
    if name == "noisy-quadratic":
        torch.testing.assert_close(model.hessian_diagonal(), spectrum())
    else:  # the rotation spreads the spectrum: diag(H) is nearly flat and far from h
        diag = model.hessian_diagonal()
        assert diag.max() / diag.min() < 20 < spectrum().max() / spectrum().min()


@pytest.mark.parametrize("name", NAMES)
def test_noise_rows_have_mean_zero_and_covariance_h(name):
    work = get_workload(name)
    xi = work.data.x_train.double()
    q = random_rotation() if name == "rotated-quadratic" else torch.eye(len(spectrum()), dtype=torch.float64)
    h = (q * spectrum()) @ q.T
    assert xi.shape == (ROWS, 100) and work.data.x_train.dtype == torch.float32
    assert xi.mean(0).abs().max() < 1e-6
    torch.testing.assert_close(xi.T @ xi / ROWS, h, rtol=0, atol=2e-6)
    # validation and test: one zero row, so the loss is the expected risk ½θᵀHθ
    torch.manual_seed(0)
    model = work.build_model()
    theta = model.theta.detach().double()
    expected = 0.5 * theta @ h @ theta
    for x, y in ((work.data.x_val, work.data.y_val), (work.data.x_test, work.data.y_test)):
        assert float(work.loss_fn(model(x), y).detach()) == pytest.approx(float(expected), rel=1e-5)


def _simulate_sgd(name: str, seeds: int, lr: float, *, with_replacement: bool = False) -> torch.Tensor:
    """Final validation losses of ``seeds`` runs of plain SGD on the workload's own model and loss,
    trained side by side with vmap: seed ``s`` gives the initial θ (global RNG) and the batch order."""
    work = get_workload(name)
    data = work.data
    models = []
    for s in range(seeds):
        torch.manual_seed(s)
        models.append(work.build_model())
    params, _ = stack_module_state(models)
    base = models[0]

    def loss_one(p, x, y):
        return work.loss_fn(functional_call(base, p, (x,)), y)

    step_grads = vmap(grad(loss_one))
    theta = params["theta"].detach()
    gens = [torch.Generator().manual_seed(s) for s in range(seeds)]
    n, b = len(data.x_train), work.batch_size
    for _ in range(work.epochs):
        if with_replacement:
            order = torch.stack([torch.randint(0, n, (n,), generator=g) for g in gens])
        else:
            order = torch.stack([torch.randperm(n, generator=g) for g in gens])
        for i in range(0, n, b):
            idx = order[:, i : i + b]
            g = step_grads({"theta": theta}, data.x_train[idx], data.y_train[idx])["theta"]
            theta = theta - lr * g
    val = vmap(lambda p: work.loss_fn(functional_call(base, p, (data.x_val,)), data.y_val))({"theta": theta})
    return val.double()


def test_one_simulated_run_is_torch_sgd_on_the_workload():
    work = get_workload("rotated-quadratic")
    data = work.data
    torch.manual_seed(5)
    model = work.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=REFERENCE_LR)
    g = torch.Generator().manual_seed(5)
    for _ in range(work.epochs):
        perm = torch.randperm(len(data.x_train), generator=g)
        for i in range(0, len(perm), work.batch_size):
            idx = perm[i : i + work.batch_size]
            opt.zero_grad()
            work.objective(model, data.x_train[idx], data.y_train[idx]).backward()
            opt.step()
    final = float(work.loss_fn(model(data.x_val), data.y_val).detach())
    simulated = _simulate_sgd("rotated-quadratic", 6, REFERENCE_LR)[5]
    assert final == pytest.approx(float(simulated), rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_sgd_matches_the_closed_form_expected_loss(name):
    """The workload's reference: E[val loss] of SGD at lr 0.05 after the default budget, in closed
    form, against the mean over 1,000 seeds (4 standard errors)."""
    work = get_workload(name)
    steps = ROWS // BATCH_SIZE * EPOCHS
    expected = sgd_expected_loss(spectrum(), REFERENCE_LR, steps, BATCH_SIZE, rows=ROWS)
    assert work.reference.value == pytest.approx(expected, rel=1e-12)
    assert (work.batch_size, work.epochs, work.task, work.curvature) == (BATCH_SIZE, EPOCHS, "regression", "closed-form")
    losses = _simulate_sgd(name, 1000, REFERENCE_LR)
    se = float(losses.std() / math.sqrt(len(losses)))
    assert abs(float(losses.mean()) - expected) < 4 * se, (float(losses.mean()), expected, se)
    assert 4 * se < work.reference.tolerance  # the recorded band is what the check allows
    # Without the without-replacement correction the prediction is off by many standard errors.
    independent = sgd_expected_loss(spectrum(), REFERENCE_LR, steps, BATCH_SIZE)
    assert abs(float(losses.mean()) - independent) > 10 * se


@pytest.mark.slow
def test_zhang_recursion_holds_for_independent_minibatches():
    """With rows drawn independently (with replacement), the minibatch noise is exactly H/B per step
    and independent across steps: Zhang et al.'s recursion E[θ²] ← (1−lr h)² E[θ²] + lr² h/B."""
    lr = 0.1
    losses = _simulate_sgd("noisy-quadratic", 1000, lr, with_replacement=True)
    expected = sgd_expected_loss(spectrum(), lr, ROWS // BATCH_SIZE * EPOCHS, BATCH_SIZE)
    se = float(losses.std() / math.sqrt(len(losses)))
    assert abs(float(losses.mean()) - expected) < 4 * se, (float(losses.mean()), expected, se)


def test_closed_form_special_cases():
    h = torch.tensor([0.5, 2.0], dtype=torch.float64)
    # no steps: E[½ Σ h θ²] with θ ~ N(0, I)
    assert sgd_expected_loss(h, 0.1, 0, 4) == pytest.approx(1.25)
    # lr = 1/h makes the coordinate jump to the noise: E[θ_1²] = lr² h / B after one step
    one = sgd_expected_loss(torch.tensor([2.0], dtype=torch.float64), 0.5, 1, 4)
    assert one == pytest.approx(0.5 * 2.0 * (0.25 * 2.0 / 4))
    # reshuffled epochs: a full epoch of noise at a = 1 (h→0 limit has zero loss) cancels exactly;
    # one step drawn without replacement has variance h (N−B) / (B (N−1))
    one_wor = sgd_expected_loss(torch.tensor([2.0], dtype=torch.float64), 0.5, 1, 4, rows=8)
    assert one_wor == pytest.approx(0.5 * 2.0 * 0.25 * 2.0 * (8 - 4) / (4 * 7))
    with pytest.raises(ValueError, match="multiple"):
        sgd_expected_loss(h, 0.1, 3, 3, rows=10)
