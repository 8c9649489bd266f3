"""The batched Mnist1dCNN forward (training/conv.py) against vmap(functional_call) and the module."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn
from torch.func import vmap
from torch.nn import functional as F

from hessian_lr.arms import get_arm
from hessian_lr.training import conv, train
from hessian_lr.training.forward import batched_forward, generic_forward
from hessian_lr.training.loop import Run
from hessian_lr.training.stacked import StackedModels
from hessian_lr.workloads import get_workload
from hessian_lr.workloads.convolution import Mnist1dCNN

CNN = get_workload("mnist1d-cnn")
SPECIALISED = "im2col+baddbmm (Mnist1dCNN)"


def variant(channels=25, convs=((5, 2, 1), (3, 2, 1), (3, 2, 1)), length=40, classes=10) -> Mnist1dCNN:
    """An Mnist1dCNN with other channels / (kernel, stride, padding) per conv (the linear layer
    sized to match an input of ``length``)."""
    model = Mnist1dCNN(channels, classes)
    cin = 1
    for name, (kernel, stride, padding) in zip(conv._CONVS, convs):
        setattr(model, name, nn.Conv1d(cin, channels, kernel, stride=stride, padding=padding))
        length = (length + 2 * padding - kernel) // stride + 1
        cin = channels
    model.linear = nn.Linear(channels * length, classes)
    return model


def stacked(model: nn.Module, k: int, seed=0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """K different random models' parameters, ``{name: [K, *shape]}``, requiring grad."""
    generator = torch.Generator().manual_seed(seed)
    return {name: (0.5 * torch.randn(k, *p.shape, generator=generator, dtype=dtype)).requires_grad_()
            for name, p in model.named_parameters()}


def model_of(template: nn.Module, params, row: int) -> nn.Module:
    """Model ``row`` of the stack as a module of the template's shape."""
    model = copy.deepcopy(template)
    model.load_state_dict({name: p[row].detach().clone() for name, p in params.items()})
    return model


@pytest.mark.parametrize(
    ("channels", "convs", "length"),
    [(25, ((5, 2, 1), (3, 2, 1), (3, 2, 1)), 40),  # the workload's
     (4, ((5, 2, 1), (3, 2, 1), (3, 2, 1)), 40),
     (3, ((3, 1, 0), (4, 3, 2), (1, 1, 0)), 17),
     (5, ((7, 2, 3), (2, 2, 0), (5, 4, 4)), 23)],
    ids=["workload", "narrow", "mixed", "wide-padding"])
def test_forward_equals_vmap_and_the_module_of_every_model(channels, convs, length):
    template = variant(channels, convs, length).double()
    forward = batched_forward(template)
    assert forward.name == SPECIALISED
    k, batch = 3, 6
    params = stacked(template, k)
    x = torch.randn(k, batch, length, dtype=torch.float64)
    shared_x = torch.randn(batch, length, dtype=torch.float64)
    generic = generic_forward(template)
    own, shared = forward.own(params, x), forward.shared(params, shared_x)
    assert own.shape == shared.shape == (k, batch, 10)
    torch.testing.assert_close(own, generic.own(params, x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shared, generic.shared(params, shared_x), rtol=1e-12, atol=1e-12)
    for row in range(k):
        model = model_of(template, params, row)
        torch.testing.assert_close(own[row], model(x[row]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(shared[row], model(shared_x), rtol=1e-12, atol=1e-12)
    # one batch for every model as an expanded view (the engine's one-seed case)
    expanded = shared_x.expand(k, batch, length)
    torch.testing.assert_close(forward.own(params, expanded), shared, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shared_inputs", [False, True])
def test_gradients_and_hessian_vector_products_equal_vmap(shared_inputs):
    template = Mnist1dCNN().double()
    k, batch = 3, 8
    params = stacked(template, k, seed=1)
    torch.manual_seed(2)
    x = torch.randn(batch, 40, dtype=torch.float64).expand(k, batch, 40) if shared_inputs else \
        torch.randn(k, batch, 40, dtype=torch.float64)
    y = torch.randint(0, 10, (k, batch))
    names = list(params)
    leaves = [params[n] for n in names]

    def losses(forward):
        return vmap(F.cross_entropy)(forward.own(params, x), y)

    fast, reference = losses(batched_forward(template)), losses(generic_forward(template))
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)
    fast_grads = torch.autograd.grad(fast.sum(), leaves, create_graph=True)
    ref_grads = torch.autograd.grad(reference.sum(), leaves, create_graph=True)
    for name, a, b in zip(names, fast_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    # every model's gradient is its own model's (the sum over models separates)
    for row in range(k):
        model = model_of(template, params, row)
        F.cross_entropy(model(x[row]), y[row]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(fast_grads[names.index(name)][row], p.grad, rtol=1e-10, atol=1e-12)
    # create_graph=True through it: Hessian-vector products equal vmap's
    generator = torch.Generator().manual_seed(3)
    vectors = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in leaves]
    fast_hvp = torch.autograd.grad(sum((g * v).sum() for g, v in zip(fast_grads, vectors)), leaves)
    ref_hvp = torch.autograd.grad(sum((g * v).sum() for g, v in zip(ref_grads, vectors)), leaves)
    for name, a, b in zip(names, fast_hvp, ref_hvp):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)


def test_gradcheck_and_gradgradcheck_including_the_input():
    template = variant(2, ((3, 2, 1), (3, 2, 1), (2, 1, 0)), 9, classes=3).double()
    layers = conv.conv_layers(template)
    params = stacked(template, 2, seed=4)
    x = torch.randn(2, 1, 9, 3, dtype=torch.float64, requires_grad=True)

    def fn(x, *leaves):
        return conv._CNN.apply(layers, x, *leaves)

    leaves = [params[n] for n in conv._PARAMS]
    assert torch.autograd.gradcheck(fn, (x, *leaves))
    assert torch.autograd.gradgradcheck(fn, (x, *leaves))


def test_im2col_is_unfold_and_col2im_its_adjoint():
    for length, kernel, stride, padding in itertools.product([1, 2, 5, 19, 40], [1, 2, 3, 5], [1, 2, 3], [0, 1, 3]):
        if length + 2 * padding < kernel:
            continue
        out_length = (length + 2 * padding - kernel) // stride + 1
        x = torch.randn(2, 3, length, 4, dtype=torch.float64, requires_grad=True)
        reference = F.pad(x, (0, 0, padding, padding)).unfold(2, kernel, stride).permute(0, 1, 4, 2, 3)
        col = conv.im2col(x, kernel, stride, padding, out_length)
        assert torch.equal(col, reference) and col.is_contiguous(), (length, kernel, stride, padding)
        g = torch.randn_like(col)
        (expected,) = torch.autograd.grad(reference, x, g)
        torch.testing.assert_close(conv.col2im(g, kernel, stride, padding, length), expected, rtol=1e-12, atol=1e-12)
        if length <= 5:  # im2col and col2im are each other's backward, to any order
            small = x[:1, :2, :, :2].detach().requires_grad_()
            assert torch.autograd.gradgradcheck(lambda t: conv.im2col(t, kernel, stride, padding, out_length), (small,))


def _dilated():
    model = Mnist1dCNN()
    model.conv2 = nn.Conv1d(25, 25, 3, stride=2, padding=2, dilation=2)
    return model


def _grouped():
    model = Mnist1dCNN()
    model.conv2 = nn.Conv1d(25, 25, 3, stride=2, padding=1, groups=5)
    return model


def _reflect():
    model = Mnist1dCNN()
    model.conv3 = nn.Conv1d(25, 25, 3, stride=2, padding=1, padding_mode="reflect")
    return model


def _no_bias():
    model = Mnist1dCNN()
    model.conv1 = nn.Conv1d(1, 25, 5, stride=2, padding=1, bias=False)
    return model


def _same_padding():
    model = Mnist1dCNN()
    model.conv3 = nn.Conv1d(25, 25, 3, padding="same")
    model.linear = nn.Linear(250, 10)
    return model


def _extra_parameter():
    model = Mnist1dCNN()
    model.scale = nn.Parameter(torch.ones(1))
    return model


class _Subclass(Mnist1dCNN):
    def forward(self, x):
        return 2 * super().forward(x)


@pytest.mark.parametrize("make", [_dilated, _grouped, _reflect, _no_bias, _same_padding, _extra_parameter, _Subclass,
                                  lambda: nn.Sequential(nn.Linear(40, 10))],
                         ids=["dilated", "grouped", "reflect-padding", "no-bias", "same-padding", "extra-parameter",
                              "subclass", "sequential"])
def test_other_models_get_the_generic_forward(make):
    model = make().double()
    assert conv.conv_layers(model) is None
    forward = batched_forward(model)
    assert forward.name == generic_forward(model).name == "vmap(functional_call)"
    assert conv.batched_cnn_forward(model).name == "vmap(functional_call)"
    params = {name: p.detach().unsqueeze(0).expand(2, *p.shape) for name, p in model.named_parameters()}
    x = torch.randn(2, 5, 40, dtype=torch.float64)
    torch.testing.assert_close(forward.own(params, x)[1], model(x[1]))


def test_the_engine_uses_it_on_mnist1d_cnn():
    models = StackedModels(CNN, get_arm("adam"), [Run({"lr": 1e-3}, 0), Run({"lr": 2e-3}, 1)])
    assert models.mlp is None and batched_forward(models.model).name == SPECIALISED


@pytest.mark.parametrize("name", ["adam", "hessian-adam"])
def test_batched_training_matches_one_at_a_time(name):
    arm = get_arm(name)
    runs = [Run({"lr": 1e-3}, 0), Run({"lr": 3e-3}, 1), Run({"lr": 2e-3}, 0)]
    batched = train(CNN, arm, runs, epochs=2, batch=True)
    reference = train(CNN, arm, runs, epochs=2, batch=False)
    for b, s in zip(batched, reference):
        assert len(b.val_loss_curve) == len(s.val_loss_curve) == 3 and not b.diverged
        assert b.val_loss_curve == pytest.approx(s.val_loss_curve, rel=1e-4)
        assert b.test_loss == pytest.approx(s.test_loss, rel=1e-4)
        assert b.test_accuracy == pytest.approx(s.test_accuracy, abs=2e-3)
        assert b.val_loss_curve[-1] < b.val_loss_curve[0]
