"""Every arm builds, trains one epoch on mnist1d-mlp and lowers the validation loss."""

from __future__ import annotations

import warnings

import pytest
import torch

from hessian_lr.arms import ARMS, Arm, get_arm, parse_arm_names
from hessian_lr.training import train_run
from hessian_lr.workloads import get_workload

WORKLOAD = get_workload("mnist1d-mlp")

# A working lr per arm (near the tuned values in FIELD_NOTES); one epoch is 35 steps.
LR = {"adam": 3e-3, "hessian-adam": 3e-3, "sgd": 0.05, "hessian-sgd": 3e-3, "adamw": 3e-3, "hessian-adamw": 3e-3,
      "adabelief": 3e-3, "adahessian": 0.03, "sophiah": 0.03, "apollo": 0.01, "diffgrad": 4e-3, "adan": 4e-3,
      # the other curvature estimators around Adam and SGD (lrs from a coarse sweep on this workload)
      "hessian-adam-squared-grad": 3e-3, "hessian-adam-secant": 1e-2, "hessian-adam-secant-rms": 5e-3,
      "hessian-adam-hutchinson": 3e-3, "hessian-adam-gauss-newton": 5e-3, "hessian-sgd-squared-grad": 3e-3,
      "hessian-sgd-secant": 0.5, "hessian-sgd-secant-rms": 0.5, "hessian-sgd-hutchinson": 1e-4,
      "hessian-sgd-gauss-newton": 1e-4}


def test_the_issue_arms_are_registered():
    assert set(LR) == set(ARMS)
    assert [a for a in ARMS if get_arm(a).second_order] == ["adahessian", "sophiah"]
    assert get_arm("sophiah").hessian_every == 10 and get_arm("adahessian").hessian_every == 1
    from hessian_lr.optim.estimators import ESTIMATORS

    for base in ("adam", "sgd"):  # every estimator is an arm: hessian-<base>[-<estimator>]
        for estimator in ESTIMATORS:
            name = f"hessian-{base}" + ("" if estimator == "grad-diff" else f"-{estimator}")
            assert get_arm(name).build([torch.nn.Parameter(torch.zeros(2))], 0.1).estimator.name == estimator


def test_each_build_gets_its_own_estimator():
    arm = get_arm("hessian-sgd-hutchinson")
    a, b = (arm.build([torch.nn.Parameter(torch.zeros(2))], 0.1) for _ in range(2))
    assert a.estimator is not b.estimator and a.estimator.update_every == 1


@pytest.mark.parametrize("name", list(LR))
def test_every_arm_trains_one_epoch_and_lowers_the_loss(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no other warnings (deprecations, ...)
        warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")  # loop handles it
        run = train_run(WORKLOAD, get_arm(name), LR[name], epochs=1, seed=0)
    assert not run.diverged
    start, end = run.val_loss_curve
    drop = 0.01 if name == "apollo" else 0.1  # Apollo's default warm-up keeps its lr tiny for 500 steps
    assert end < start - drop, (name, start, end)
    assert 0.1 < run.test_accuracy <= 1


def test_needs_graph_follows_the_refresh_period():
    assert [get_arm("sophiah").needs_graph(s) for s in range(12)] == [s in (0, 10) for s in range(12)]
    assert all(get_arm("adahessian").needs_graph(s) for s in range(3))
    assert not any(get_arm("adam").needs_graph(s) for s in range(3))


def test_second_order_step_leaves_no_graph_behind():
    """After training, no parameter holds a gradient (and so no graph): memory cannot grow."""
    seen = []

    def build(params, lr):
        params = list(params)
        seen.extend(params)
        return get_arm("sophiah").build(params, lr)

    arm = Arm("probe", "", build, hessian_every=10)
    train_run(WORKLOAD, arm, 0.03, epochs=1, seed=0)
    assert seen and all(p.grad is None for p in seen)


def test_sophiah_refreshes_its_hessian_only_on_graph_steps():
    """The loop's schedule matches SophiaH's: a refresh step without a graph would raise."""
    model = torch.nn.Linear(3, 2)
    opt = get_arm("sophiah").build(model.parameters(), 0.01)
    x = torch.randn(8, 3)
    for step in range(21):
        model(x).pow(2).mean().backward(create_graph=get_arm("sophiah").needs_graph(step))
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert opt.param_groups[0]["step"] == 21


def test_missing_baselines_package_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pytorch_optimizer", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "pytorch_optimizer" else 1)
    with pytest.raises(ValueError, match="pytorch-optimizer"):
        parse_arm_names("adam,adabelief")
    assert parse_arm_names("adam,sgd") == ("adam", "sgd")
    with pytest.raises(ValueError, match="pytorch-optimizer"):
        get_arm("adan").build(torch.nn.Linear(2, 2).parameters(), 1e-3)


def test_unknown_arm():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        parse_arm_names("lion")


@pytest.mark.parametrize("name", [name for name, arm in ARMS.items() if arm.requires is None])
def test_declared_update_rule_is_the_one_the_built_optimizer_implements(name):
    """Batched training trusts ``Arm.update_rule`` without building the optimizer; this is the check."""
    from hessian_lr.arms import update_rule_of

    arm = get_arm(name)
    built = update_rule_of(arm.build([torch.nn.Parameter(torch.zeros(3))], 1e-3))
    assert arm.update_rule == built
    if name in ("adam", "hessian-adam", "sgd", "hessian-sgd", "adamw", "hessian-adamw"):
        assert built is not None and built.hessian == name.startswith("hessian-")


def test_update_rule_of_reads_hyperparameters_and_refuses_what_it_cannot_reproduce():
    from hessian_lr.arms import UpdateRule, update_rule_of
    from hessian_lr.optim import HessianLRAdaptation

    p = [torch.nn.Parameter(torch.zeros(3))]
    assert update_rule_of(torch.optim.Adam(p, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)) == UpdateRule(
        "adam", betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)
    assert update_rule_of(HessianLRAdaptation(torch.optim.SGD(p, lr=0.1, momentum=0.5, nesterov=True), 0.9, 1e-6)) == \
        UpdateRule("sgd", momentum=0.5, nesterov=True, hessian=True, curvature_beta=0.9, curvature_eps=1e-6)
    for refused in (torch.optim.Adam(p, amsgrad=True), torch.optim.RMSprop(p),
                    torch.optim.Adam([{"params": p[:1]}, {"params": [torch.nn.Parameter(torch.zeros(1))]}]),
                    HessianLRAdaptation(torch.optim.Adam(p), nonfinite="skip"),
                    HessianLRAdaptation(torch.optim.Adam(p), estimator="squared-grad")):
        assert update_rule_of(refused) is None
