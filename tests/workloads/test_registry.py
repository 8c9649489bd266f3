"""The workload registry: each workload builds offline and trains on this CPU."""

from __future__ import annotations

import pytest
import torch

from hessian_lr.arms import get_arm
from hessian_lr.training import train_run
from hessian_lr.workloads import WORKLOADS, get_workload


def test_registry_holds_the_three_workloads_with_budgets():
    assert {"mnist1d-mlp", "mnist1d-cnn", "mnist1d-deep-mlp"} <= set(WORKLOADS)
    assert get_workload("mnist1d-mlp").epochs == 20 and get_workload("mnist1d-cnn").epochs == 30
    with pytest.raises(ValueError, match="unknown workload"):
        get_workload("cifar")


def test_cnn_is_the_mnist1d_paper_convbase():
    model = get_workload("mnist1d-cnn").build_model()
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(25, 1, 5), (25,), (25, 25, 3), (25,), (25, 25, 3), (25,), (10, 125), (10,)]
    assert sum(p.numel() for p in model.parameters()) == 5210
    assert model(torch.zeros(7, 40)).shape == (7, 10)


def test_deep_mlp_has_eight_hidden_layers():
    model = get_workload("mnist1d-deep-mlp").build_model()
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(40, 64)] + [(64, 64)] * 7 + [(64, 10)]


@pytest.mark.parametrize("name", ["mnist1d-cnn", "mnist1d-deep-mlp"])
def test_new_workloads_learn_in_two_epochs(name):
    run = train_run(get_workload(name), get_arm("adam"), 1e-2, epochs=2, seed=0)
    assert run.val_loss_curve[-1] < run.val_loss_curve[0] - 0.2
    assert run.test_accuracy > 0.25  # chance is 0.1
