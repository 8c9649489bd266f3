"""Any base optimizer: the wrapper equals "reference pre-conditioning, then base.step()" exactly."""

from __future__ import annotations

import pytest
import torch
from optim_helpers import assert_same, mlp, params_of, reference_train, train

from hessian_lr.optim import HessianLRAdaptation

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

BASES = {
    "SGD": lambda p: torch.optim.SGD(p, lr=0.05),
    "SGD momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "SGD nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "SGD fused": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, fused=True),
    "Adam": lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False),
    "Adam foreach": lambda p: torch.optim.Adam(p, lr=1e-2, foreach=True),
    "Adam fused": lambda p: torch.optim.Adam(p, lr=1e-2, fused=True),
    "AdamW": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "AdamW fused": lambda p: torch.optim.AdamW(p, lr=1e-2, fused=True),
    "RMSprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
    "Adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
    "Adagrad fused": lambda p: torch.optim.Adagrad(p, lr=1e-2, fused=True),
    "Adamax": lambda p: torch.optim.Adamax(p, lr=1e-2),
    "NAdam": lambda p: torch.optim.NAdam(p, lr=1e-2),
    "Lion (pytorch-optimizer)": lambda p: pytorch_optimizer.Lion(p, lr=1e-3),
    "AdaBelief (pytorch-optimizer)": lambda p: pytorch_optimizer.AdaBelief(p, lr=1e-2),
}


@pytest.mark.parametrize("name", list(BASES))
def test_wraps_any_optimizer(name, path):
    a, b = mlp(), mlp()
    opt = HessianLRAdaptation(BASES[name](a.parameters()), beta=0.9, fused=path == "kernel")
    train(a, opt, 4)
    reference_train(b, BASES[name](b.parameters()), 4, beta=0.9)
    assert_same(params_of(a), params_of(b))
    assert not all(torch.equal(x, y) for x, y in zip(params_of(a), params_of(mlp())))  # it did train
