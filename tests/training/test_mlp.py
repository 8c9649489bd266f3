"""The hand-written batched MLP backward against autograd, model by model."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hessian_lr.training.mlp import BatchedMLP
from hessian_lr.workloads import get_workload
from hessian_lr.workloads.mlp import mlp

WIDTHS = (7, 6, 5, 4)


def stacked_models(k: int, widths=WIDTHS, dtype=torch.float64, seed=0):
    """K different models of one architecture: the template, its names, and [K, *shape] tensors."""
    torch.manual_seed(seed)
    template = mlp(widths).to(dtype)
    names = [name for name, _ in template.named_parameters()]
    params = [torch.randn(k, *p.shape, dtype=dtype) for p in template.parameters()]
    return template, names, params


def model_of(template: nn.Module, names, params, k: int) -> nn.Module:
    model = mlp(WIDTHS).to(params[0].dtype)
    model.load_state_dict({name: p[k].clone() for name, p in zip(names, params)})
    return model


@pytest.mark.parametrize("shared_inputs", [False, True])
def test_gradients_equal_autograd_of_each_models_cross_entropy(shared_inputs):
    k, batch = 3, 9
    template, names, params = stacked_models(k)
    torch.manual_seed(1)
    if shared_inputs:  # one batch for every model, as an expanded view (the engine's one-seed case)
        x = torch.randn(batch, WIDTHS[0], dtype=torch.float64).expand(k, batch, WIDTHS[0])
        y = torch.randint(0, WIDTHS[-1], (batch,)).expand(k, batch)
    else:
        x = torch.randn(k, batch, WIDTHS[0], dtype=torch.float64)
        y = torch.randint(0, WIDTHS[-1], (k, batch))
    grads = [torch.full_like(p, float("nan")) for p in params]  # overwritten, not accumulated
    batched = BatchedMLP(template, names)
    batched.grad_(params, grads, x, y)
    for model_index in range(k):
        model = model_of(template, names, params, model_index)
        loss = F.cross_entropy(model(x[model_index]), y[model_index])
        loss.backward()
        for name, p, g in zip(names, model.parameters(), grads):
            torch.testing.assert_close(g[model_index], p.grad, rtol=1e-12, atol=1e-14, msg=name)


def test_loss_accuracy_and_logits_equal_each_models_own():
    k, n = 4, 50
    template, names, params = stacked_models(k)
    x = torch.randn(n, WIDTHS[0], dtype=torch.float64)
    y = torch.randint(0, WIDTHS[-1], (n,))
    batched = BatchedMLP(template, names)
    loss, accuracy = batched.loss_and_accuracy(params, x.expand(k, *x.shape), y)
    logits = batched.logits(params, x.expand(k, *x.shape))
    assert logits.shape == (k, WIDTHS[-1], n) and loss.shape == accuracy.shape == (k,)
    for i in range(k):
        outputs = model_of(template, names, params, i)(x)
        torch.testing.assert_close(logits[i].T, outputs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(loss[i], F.cross_entropy(outputs, y), rtol=1e-12, atol=1e-12)
        assert accuracy[i].item() == (outputs.argmax(-1) == y).float().mean().item()  # as SingleModel
    assert batched.loss_and_accuracy(params, x.expand(k, *x.shape), y, accuracy=False)[1] is None


def test_the_same_buffers_every_step_and_new_ones_when_they_change():
    """It caches views of the buffers it is given; new tensors (after the engine drops a row) are
    picked up, and repeated steps give the same gradients."""
    template, names, params = stacked_models(3)
    batched = BatchedMLP(template, names)
    x, y = torch.randn(3, 5, WIDTHS[0], dtype=torch.float64), torch.randint(0, WIDTHS[-1], (3, 5))
    grads = [torch.empty_like(p) for p in params]
    batched.grad_(params, grads, x, y)
    first = [g.clone() for g in grads]
    batched.grad_(params, grads, x, y)
    assert all(torch.equal(a, b) for a, b in zip(first, grads))
    kept = [p[[0, 2]].clone() for p in params]  # row 1 dropped: new tensors
    kept_grads = [torch.empty_like(p) for p in kept]
    batched.grad_(kept, kept_grads, x[[0, 2]], y[[0, 2]])
    for g, f in zip(kept_grads, first):
        torch.testing.assert_close(g, f[[0, 2]], rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        params[0][1] += 1.0  # values of the cached buffers change in place: seen
    batched.grad_(params, grads, x, y)
    assert not torch.equal(grads[0][1], first[0][1]) and torch.equal(grads[0][0], first[0][0])


def test_float32_gradients_of_the_workload_model_agree_with_autograd():
    workload = get_workload("mnist1d-mlp")
    template, names, params = stacked_models(2, widths=(40, 100, 100, 10), dtype=torch.float32)
    data = workload.data
    x = torch.stack([data.x_train[:100], data.x_train[100:200]])
    y = torch.stack([data.y_train[:100], data.y_train[100:200]])
    grads = [torch.empty_like(p) for p in params]
    BatchedMLP(template, names).grad_(params, grads, x, y)
    for i in range(2):
        model = mlp((40, 100, 100, 10))
        model.load_state_dict({name: p[i] for name, p in zip(names, params)})
        F.cross_entropy(model(x[i]), y[i]).backward()
        for p, g in zip(model.parameters(), grads):
            torch.testing.assert_close(g[i], p.grad, rtol=1e-4, atol=1e-6)


class _Buffered(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        self.register_buffer("running", torch.zeros(1))


@pytest.mark.parametrize(("model", "loss_fn", "l2", "supported"), [
    (mlp((40, 100, 100, 10)), F.cross_entropy, 0.0, True),
    (mlp((40, 10)), F.cross_entropy, 0.0, True),  # one Linear
    (mlp((40, 64, 64, 64, 10)), F.cross_entropy, 0.0, True),
    (mlp((40, 100, 10)), F.cross_entropy, 1e-3, False),  # an L2 penalty
    (mlp((40, 100, 10)), F.mse_loss, 0.0, False),
    (mlp((40, 100, 10)), lambda out, y: F.cross_entropy(out, y), 0.0, False),  # not cross_entropy itself
    (nn.Sequential(nn.Linear(4, 5, bias=False), nn.ReLU(), nn.Linear(5, 3)), F.cross_entropy, 0.0, False),
    (nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)), F.cross_entropy, 0.0, False),
    (nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.ReLU(), nn.Linear(5, 3)), F.cross_entropy, 0.0, False),
    (nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3)), F.cross_entropy, 0.0, False),
    (nn.Sequential(nn.ReLU(), nn.Linear(4, 3)), F.cross_entropy, 0.0, False),
    (nn.Sequential(nn.Linear(4, 3), nn.ReLU()), F.cross_entropy, 0.0, False),
    (nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(6, 3)), F.cross_entropy, 0.0, False),  # widths mismatch
    (nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.1), nn.Linear(5, 3)), F.cross_entropy, 0.0, False),
    (nn.Sequential(), F.cross_entropy, 0.0, False),
    (_Buffered(), F.cross_entropy, 0.0, False),
    (get_workload("mnist1d-cnn").build_model(), F.cross_entropy, 0.0, False),  # not a Sequential
])
def test_supports(model, loss_fn, l2, supported):
    assert BatchedMLP.supports(model, loss_fn, l2=l2) is supported
