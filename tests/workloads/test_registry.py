"""The workload contract, for every registered workload: data types, seeded models, vmap over
stacked models (forwards and gradients), the penalty, and that each workload learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from hessian_lr.workloads import CURVATURE_ROUTES, WORKLOADS, Reference, Workload, get_workload
from hessian_lr.workloads.plain import train_plain

ALL = sorted(WORKLOADS)
NEW = ["noisy-quadratic", "rotated-quadratic", "digits-softmax", "mnist1d-gru", "teacher-student",
       "modular-addition-transformer"]


def test_registry_holds_the_nine_workloads_with_budgets():
    assert {"mnist1d-mlp", "mnist1d-cnn", "mnist1d-deep-mlp", *NEW} == set(WORKLOADS)
    assert get_workload("mnist1d-mlp").epochs == 20 and get_workload("mnist1d-cnn").epochs == 15
    with pytest.raises(ValueError, match="unknown workload"):
        get_workload("cifar")


@pytest.mark.parametrize("name", ALL)
def test_workload_fields_and_data_types(name):
    work = get_workload(name)
    assert work.task in ("classification", "regression") and work.curvature in CURVATURE_ROUTES
    assert work.batch_size >= 1 and work.epochs >= 1 and work.l2 >= 0
    if work.reference is not None:
        assert isinstance(work.reference, Reference) and work.reference.value == work.reference.value  # not NaN
        assert work.reference.source and "test" in work.reference.check
    data = work.data
    for x in (data.x_train, data.x_val, data.x_test):
        assert x.dtype == torch.float32 and x.shape[1:] == data.x_train.shape[1:]
    for y in (data.y_train, data.y_val, data.y_test):
        assert y.dtype == (torch.int64 if work.task == "classification" else torch.float32)
    assert len(data.x_train) == len(data.y_train) and len(data.x_val) == len(data.y_val)
    assert work.data is data  # built once per process


@pytest.mark.parametrize("name", ALL)
def test_seeded_models_have_no_buffers_or_dropout_and_one_loss_per_minibatch(name):
    work = get_workload(name)
    torch.manual_seed(11)
    a = work.build_model()
    torch.manual_seed(11)
    b = work.build_model()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not list(a.buffers())
    assert not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in a.modules())
    x, y = work.data.x_train[:5], work.data.y_train[:5]
    out = a(x)
    loss = work.loss_fn(out, y)
    assert loss.shape == () and torch.isfinite(loss)
    if work.task == "classification":
        assert out.shape == (5, work.data.num_classes)
        assert 0 <= float(work.accuracy(out, y)) <= 1
    else:
        assert work.accuracy(out, y) is None


@pytest.mark.parametrize("name", ALL)
def test_vmap_over_three_stacked_models_matches_each_model(name):
    """The batched engine's contract: vmap(functional_call) and vmap(grad) over stacked parameters
    equal each model's own forward and autograd gradient (objective including the penalty)."""
    work = get_workload(name)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(work.build_model())
    params, buffers = stack_module_state(models)
    assert not buffers
    base = models[0]
    x = work.data.x_train[:8].expand(3, *work.data.x_train[:8].shape)
    y = work.data.y_train[:8].expand(3, *work.data.y_train[:8].shape)

    def forward(p, xb):
        return functional_call(base, p, (xb,))

    def objective(p, xb, yb):
        return work.loss_fn(functional_call(base, p, (xb,)), yb) + work.penalty(p.values())

    outputs = vmap(forward)(params, x)
    grads = vmap(grad(objective))(params, x, y)
    for k, model in enumerate(models):
        torch.testing.assert_close(outputs[k], model(x[k]), rtol=1e-5, atol=1e-6)
        model.zero_grad()
        work.objective(model, x[k], y[k]).backward()
        for (pname, p) in model.named_parameters():
            torch.testing.assert_close(grads[pname][k], p.grad, rtol=1e-4, atol=1e-6)


def test_penalty_is_half_l2_times_the_squared_norm_of_all_parameters():
    torch.manual_seed(0)
    work = get_workload("digits-softmax")
    model = work.build_model()
    norm2 = sum(float(p.detach().square().sum()) for p in model.parameters())
    assert float(work.penalty(model.parameters()).detach()) == pytest.approx(0.5 * work.l2 * norm2, rel=1e-6)
    assert get_workload("mnist1d-mlp").penalty(model.parameters()) == 0.0
    x, y = work.data.x_train, work.data.y_train
    assert float(work.objective(model, x, y).detach()) == pytest.approx(
        float(work.loss_fn(model(x), y).detach()) + 0.5 * work.l2 * norm2, rel=1e-6)


def test_workload_rejects_bad_fields():
    base = get_workload("mnist1d-mlp")
    for field, value in (("task", "ranking"), ("curvature", "magic"), ("l2", -1.0)):
        with pytest.raises(ValueError, match=field):
            Workload(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, field: value})


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


@pytest.mark.parametrize("name,lr,epochs", [("mnist1d-cnn", 1e-2, 2), ("mnist1d-deep-mlp", 1e-2, 2),
                                            ("teacher-student", 3e-3, 3), ("digits-softmax", 1e-2, 3),
                                            ("noisy-quadratic", 1e-2, 2)])
def test_workloads_learn_in_a_few_epochs(name, lr, epochs):
    run = train_plain(get_workload(name), lr, epochs=epochs, seed=0)
    assert run.val_loss[-1] < 0.8 * run.val_loss[0]
