"""digits-softmax: offline data, the L-BFGS optimum, and training of the workload reaching it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hessian_lr.workloads import get_workload
from hessian_lr.workloads.digits import OPTIMUM_OBJECTIVE, digits_splits, lbfgs_optimum, load_digits_arrays


def test_digits_come_from_sklearn_bundle_and_are_cached(tmp_path):
    from sklearn.datasets import load_digits

    arrays = load_digits_arrays(tmp_path)
    assert len(list(tmp_path.glob("digits-sklearn-*.npz"))) == 1
    bunch = load_digits()
    np.testing.assert_array_equal(arrays["x"], bunch.data)
    np.testing.assert_array_equal(arrays["y"], bunch.target)
    np.testing.assert_array_equal(load_digits_arrays(tmp_path)["x"], arrays["x"])  # from the cache


def test_split_is_fixed_disjoint_and_standardised(tmp_path):
    splits = digits_splits(tmp_path)
    assert [len(t) for t in (splits.x_train, splits.x_val, splits.x_test)] == [1197, 300, 300]
    assert splits.num_classes == 10 and splits.x_train.dtype == torch.float32
    assert splits.x_train.mean(0).abs().max() < 1e-5
    std = splits.x_train.std(0, unbiased=False)
    assert ((std - 1).abs() < 1e-4).sum() + (std == 0).sum() == 64  # unit scale, or a constant pixel
    rows = [{tuple(r) for r in x.numpy().round(5)} for x in (splits.x_train, splits.x_val, splits.x_test)]
    # the 8x8 digits contain a few exact duplicate images; the split itself is disjoint by index
    assert len(rows[0] & rows[2]) < 5
    torch.testing.assert_close(digits_splits(tmp_path).x_val, splits.x_val, rtol=0, atol=0)


@pytest.fixture(scope="module")
def optimum():
    work = get_workload("digits-softmax")
    return lbfgs_optimum(work.data.x_train, work.data.y_train, work.l2)


def test_lbfgs_reaches_the_recorded_optimum_with_zero_gradient(optimum):
    work = get_workload("digits-softmax")
    assert optimum["objective"] == pytest.approx(OPTIMUM_OBJECTIVE, abs=1e-8)
    assert work.reference.value == OPTIMUM_OBJECTIVE
    assert optimum["grad_norm"] < 1e-6
    # The workload's own torch objective (loss_fn + penalty) agrees and is stationary there.
    model = work.build_model().double()
    with torch.no_grad():
        model[0].weight.copy_(optimum["weight"])
        model[0].bias.copy_(optimum["bias"])
    value = work.objective(model, work.data.x_train.double(), work.data.y_train)
    value.backward()
    assert float(value.detach()) == pytest.approx(OPTIMUM_OBJECTIVE, abs=1e-10)
    assert float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm()) < 1e-6


def test_long_full_batch_training_reaches_the_optimum(optimum):
    """Full-batch Adam on the workload's objective, then a decayed tail, ends within the reference's
    tolerance of the L-BFGS optimum; the test accuracy there is that of the optimum."""
    work = get_workload("digits-softmax")
    torch.manual_seed(0)
    model = work.build_model()
    x, y = work.data.x_train, work.data.y_train
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1500)
    for _ in range(1500):
        opt.zero_grad()
        work.objective(model, x, y).backward()
        opt.step()
        sched.step()
    final = float(work.objective(model, x, y).detach())
    assert OPTIMUM_OBJECTIVE - 1e-7 < final < OPTIMUM_OBJECTIVE + work.reference.tolerance
    weight = model[0].weight.detach().double()
    assert float((weight - optimum["weight"]).norm() / optimum["weight"].norm()) < 0.05
