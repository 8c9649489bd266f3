"""The exact Hessian diagonal against torch.autograd.functional.hessian, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hessian_lr.analysis.exact import (
    exact_hessian_diagonal,
    gauss_newton_diagonal_ce,
    hessian_diagonal_hvp,
    is_piecewise_linear,
)

D = torch.float64


def _model(act: type[nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), act(), nn.Linear(6, 5), act(), nn.Linear(5, 3)).to(D)


def _data(n: int = 20, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=D), torch.randint(0, 3, (n,), generator=g)


def _full_hessian_diagonal(model: nn.Module, x, y) -> torch.Tensor:
    """diag of the full (all-parameter) Hessian of the mean cross-entropy, via functional.hessian."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(flat):
        pieces, i = {}, 0
        for name, shape in zip(names, shapes):
            n = shape.numel()
            pieces[name] = flat[i : i + n].reshape(shape)
            i += n
        return nn.functional.cross_entropy(torch.func.functional_call(model, pieces, (x,)), y)

    return torch.autograd.functional.hessian(loss_of, flat0).diagonal()


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
    small_blocks = hessian_diagonal_hvp(lambda: nn.functional.cross_entropy(model(x), y), list(model.parameters()),
                                        block_size=7)
    torch.testing.assert_close(_flat(small_blocks), full, rtol=1e-10, atol=1e-13)
    gn = _flat(gauss_newton_diagonal_ce(model, x))
    assert (gn - full).abs().max() > 1e-4  # tanh layers have second-order terms GN leaves out


def test_vmap_and_linear_fast_path_agree():
    from hessian_lr.analysis.exact import _gauss_newton_diagonal_linear, _gauss_newton_diagonal_vmap

    model, (x, _) = _model(nn.ReLU, seed=3), _data(n=37)
    a = _flat(_gauss_newton_diagonal_linear(model, x, chunk_size=16))
    b = _flat(_gauss_newton_diagonal_vmap(model, x, chunk_size=16))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_conv_net_uses_the_general_gauss_newton_route():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6, 3)).to(D)
    x = torch.randn(10, 1, 8, dtype=D)
    y = torch.randint(0, 3, (10,))
    full = _full_hessian_diagonal(model, x, y)
    torch.testing.assert_close(_flat(exact_hessian_diagonal(model, x, y)), full, rtol=1e-10, atol=1e-13)


def test_bad_method():
    model, (x, y) = _model(nn.ReLU), _data()
    with pytest.raises(ValueError, match="method"):
        exact_hessian_diagonal(model, x, y, method="magic")
