"""Every estimator is buildable as a compare arm and trains through the backward protocol."""

from __future__ import annotations

import torch
from torch import nn

from hessian_lr.analysis.arm_factories import ESTIMATOR_EPS, estimator_arm_specs, hessian_factory
from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim.estimators import ESTIMATORS


def _adam(params, lr):
    return torch.optim.Adam(params, lr=lr)


def _sgd(params, lr):
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def test_specs_cover_every_estimator_and_base():
    specs = estimator_arm_specs({"adam": (_adam, "Adam"), "sgd": (_sgd, "SGD")}, skip_existing=["hessian-adam"])
    names = [s["name"] for s in specs]
    assert "hessian-adam" not in names and "hessian-sgd" in names
    for est in ESTIMATORS:
        if est != "grad-diff":
            assert f"hessian-adam-{est}" in names and f"hessian-sgd-{est}" in names
    assert len(names) == len(set(names)) == 2 * len(ESTIMATORS) - 1
    assert set(ESTIMATOR_EPS.values()) == {1e-8}


def test_every_arm_trains_with_optimizer_backward():
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    for spec in estimator_arm_specs({"adam": (_adam, "Adam")}):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
        opt = spec["build"](model.parameters(), 1e-2)
        assert isinstance(opt, HessianLRAdaptation)
        first = None
        for _ in range(30):
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            first = float(loss) if first is None else first
            opt.zero_grad()
            opt.backward(loss, logits=logits)
            opt.step()
        assert float(loss) < first, spec["name"]


def test_each_build_gets_its_own_estimator():
    build = hessian_factory(_sgd, "hutchinson")
    a = build([nn.Parameter(torch.zeros(2))], 0.1)
    b = build([nn.Parameter(torch.zeros(2))], 0.1)
    assert a.estimator is not b.estimator and a.estimator.update_every == 1
