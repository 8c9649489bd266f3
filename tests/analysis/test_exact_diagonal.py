"""Every exact-diagonal route against torch.autograd.functional.hessian, in float64, on tiny instances."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hessian_lr.analysis.exact import (
    _gauss_newton_diagonal_linear,
    _gauss_newton_diagonal_vmap,
    exact_hessian_diagonal,
    gauss_newton_diagonal,
    gauss_newton_diagonal_ce,
    hessian_diagonal_by_outputs,
    hessian_diagonal_hvp,
    is_piecewise_linear,
    loss_hessian_factors,
    workload_hessian_diagonal,
)
from hessian_lr.workloads import get_workload
from hessian_lr.workloads.convolution import Mnist1dCNN
from hessian_lr.workloads.sequence import BiGRUClassifier
from hessian_lr.workloads.teacher import mse
from hessian_lr.workloads.transformer import TinyTransformer, modular_addition_splits

D = torch.float64
CE = nn.functional.cross_entropy


def _model(act: type[nn.Module], seed: int = 0, outputs: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), act(), nn.Linear(6, 5), act(), nn.Linear(5, outputs)).to(D)


def _data(n: int = 20, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=D), torch.randint(0, 3, (n,), generator=g)


def _full_hessian_diagonal(model: nn.Module, x, y, loss_fn=CE, l2: float = 0.0) -> torch.Tensor:
    """diag of the full (all-parameter) Hessian of loss_fn(model(x), y) + (l2/2)‖θ‖², via functional.hessian."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def objective(flat):
        pieces, i = {}, 0
        for name, shape in zip(names, shapes):
            n = shape.numel()
            pieces[name] = flat[i : i + n].reshape(shape)
            i += n
        return loss_fn(torch.func.functional_call(model, pieces, (x,)), y) + 0.5 * l2 * flat.square().sum()

    return torch.autograd.functional.hessian(objective, flat0).diagonal()


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def test_relu_mlp_exact_diagonal_matches_the_full_hessian():
    model, (x, y) = _model(nn.ReLU), _data()
    full = _full_hessian_diagonal(model, x, y)
    assert is_piecewise_linear(model)
    for method in ("auto", "gauss-newton", "hvp"):
        diag = _flat(exact_hessian_diagonal(model, x, y, method=method))
        torch.testing.assert_close(diag, full, rtol=1e-10, atol=1e-13)
    assert (full >= -1e-15).all()


def test_hvp_route_is_exact_for_smooth_nets_where_gauss_newton_is_not():
    model, (x, y) = _model(nn.Tanh), _data()
    assert not is_piecewise_linear(model)
    full = _full_hessian_diagonal(model, x, y)
    torch.testing.assert_close(_flat(exact_hessian_diagonal(model, x, y)), full, rtol=1e-10, atol=1e-13)
    small_blocks = hessian_diagonal_hvp(lambda: CE(model(x), y), list(model.parameters()), block_size=7)
    torch.testing.assert_close(_flat(small_blocks), full, rtol=1e-10, atol=1e-13)
    gn = _flat(gauss_newton_diagonal_ce(model, x))
    assert (gn - full).abs().max() > 1e-4  # tanh layers have second-order terms GN leaves out


def test_gauss_newton_identity_holds_under_mse_for_piecewise_linear_nets():
    """diag H = diag GN for a ReLU net under mean squared error too (the output Hessian is (2/K) I)."""
    model = _model(nn.ReLU, outputs=4)
    x, _ = _data()
    y = torch.randn(20, 4, generator=torch.Generator().manual_seed(7), dtype=D)
    full = _full_hessian_diagonal(model, x, y, mse)
    torch.testing.assert_close(_flat(gauss_newton_diagonal(model, x, y, mse)), full, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(_flat(_gauss_newton_diagonal_vmap(model, x, y, mse, chunk_size=7)), full,
                               rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(_flat(hessian_diagonal_by_outputs(model, x, y, mse)), full, rtol=1e-10, atol=1e-13)
    smooth = _model(nn.Tanh, outputs=4)
    gap = _flat(gauss_newton_diagonal(smooth, x, y, mse)) - _full_hessian_diagonal(smooth, x, y, mse)
    assert gap.abs().max() > 1e-4


def test_loss_hessian_factors_reproduce_the_output_hessians():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 5, generator=g, dtype=D), torch.randint(0, 5, (6,), generator=g)
    targets = torch.randn(6, 5, generator=g, dtype=D)
    for loss_fn, y in ((CE, labels), (mse, targets), (lambda o, t: CE(o, t), labels)):
        u = loss_hessian_factors(loss_fn, logits, y)
        for n in range(6):
            row = torch.autograd.functional.hessian(lambda f: loss_fn(f.unsqueeze(0), y[n : n + 1]), logits[n])
            torch.testing.assert_close(u[n].T @ u[n], row, rtol=1e-10, atol=1e-12)


def test_vmap_and_linear_fast_path_agree():
    model, (x, y) = _model(nn.ReLU, seed=3), _data(n=37)
    a = _flat(_gauss_newton_diagonal_linear(model, x, y, CE, chunk_size=16))
    b = _flat(_gauss_newton_diagonal_vmap(model, x, y, CE, chunk_size=16))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_conv_net_uses_the_general_gauss_newton_route():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6, 3)).to(D)
    x = torch.randn(10, 1, 8, dtype=D)
    y = torch.randint(0, 3, (10,))
    full = _full_hessian_diagonal(model, x, y)
    torch.testing.assert_close(_flat(exact_hessian_diagonal(model, x, y)), full, rtol=1e-10, atol=1e-13)


def test_mnist1d_cnn_class_is_piecewise_linear_so_gauss_newton_is_exact():
    torch.manual_seed(0)
    model = Mnist1dCNN(channels=2).to(D)
    x, y = torch.randn(6, 40, dtype=D), torch.randint(0, 10, (6,))
    full = _full_hessian_diagonal(model, x, y)
    assert get_workload("mnist1d-cnn").curvature == "gauss-newton"
    torch.testing.assert_close(_flat(gauss_newton_diagonal(model, x, y)), full, rtol=1e-10, atol=1e-13)


def test_output_hessian_route_on_a_tiny_transformer():
    """Attention, LayerNorm, GELU, embeddings: the per-module-output route is the exact diagonal."""
    torch.manual_seed(0)
    model = TinyTransformer(p=5, width=8, heads=2, mlp=12).to(D)
    splits = modular_addition_splits(5)
    x, y = splits.x_train[:12].to(D), splits.y_train[:12]
    full = _full_hessian_diagonal(model, x, y)
    torch.testing.assert_close(_flat(hessian_diagonal_by_outputs(model, x, y, CE, block_size=5)), full,
                               rtol=1e-9, atol=1e-12)
    gn = _flat(gauss_newton_diagonal(model, x, y))
    assert (gn - full).abs().max() > 1e-3  # not piecewise linear


def test_output_hessian_route_on_a_tiny_gru_falls_back_to_coordinates_for_the_cell():
    torch.manual_seed(0)
    model = BiGRUClassifier(hidden=3, steps=6, num_classes=4).to(D)
    x, y = torch.randn(10, 6, dtype=D), torch.randint(0, 4, (10,))
    full = _full_hessian_diagonal(model, x, y)
    torch.testing.assert_close(_flat(hessian_diagonal_by_outputs(model, x, y, CE, block_size=8)), full,
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["noisy-quadratic", "rotated-quadratic", "digits-softmax", "teacher-student"])
def test_workload_routes_include_the_penalty_and_match_autograd(name):
    """workload_hessian_diagonal = diag ∇²(loss + penalty) by each workload's own route."""
    work = get_workload(name)
    torch.manual_seed(1)
    model = work.build_model().double()
    x, y = work.data.x_train[:24].double(), work.data.y_train[:24]
    y = y.double() if y.is_floating_point() else y
    full = _full_hessian_diagonal(model, x, y, work.loss_fn, work.l2)
    diag = _flat(workload_hessian_diagonal(work, model, x, y))
    torch.testing.assert_close(diag, full, rtol=1e-9, atol=1e-12)
    if work.l2:
        without = _flat(workload_hessian_diagonal(work, model, x, y)) - work.l2
        torch.testing.assert_close(without, _full_hessian_diagonal(model, x, y, work.loss_fn), rtol=1e-9, atol=1e-12)


def test_bad_method_and_route():
    model, (x, y) = _model(nn.ReLU), _data()
    with pytest.raises(ValueError, match="method"):
        exact_hessian_diagonal(model, x, y, method="magic")
    with pytest.raises(ValueError, match="route"):
        workload_hessian_diagonal(get_workload("mnist1d-mlp"), model, x, y, route="magic")


def test_a_workload_without_an_exact_route_is_refused_in_one_line():
    from dataclasses import replace

    workload = replace(get_workload("teacher-student"), name="too-large", curvature="none")
    model = workload.build_model()
    with pytest.raises(ValueError, match=r"^workload 'too-large' has no exact Hessian diagonal"):
        workload_hessian_diagonal(workload, model, torch.zeros(2, 16), torch.zeros(2, 4))
