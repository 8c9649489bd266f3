"""Every registered arm and the wrapped built-ins: what they are made of, and that they build and
train one epoch on mnist1d-mlp."""

from __future__ import annotations

import warnings

import pytest
import torch

from hessian_lr.arms import (ARMS, PLAIN, Arm, EstimatorStep, GraphStep, PlainStep, ScheduleFreeStep, get_arm,
                             parse_arm_names)
from hessian_lr.arms.names import NORMALISES, parse_wrapped
from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim.estimators import ESTIMATORS
from hessian_lr.training import train_run
from hessian_lr.tuning.space import DEFAULT_LR, Fixed, Float, SearchSpace
from hessian_lr.workloads import get_workload

WORKLOAD = get_workload("mnist1d-mlp")

# A working lr per arm (near the tuned values in FIELD_NOTES); one epoch is 35 steps. For Shampoo,
# Kron and Lion the package's default lr (1e-3, 1e-3, 1e-4) lowers the loss by < 0.03 in one epoch,
# so a larger working lr is used.
LR = {"adam": 3e-3, "hessian-adam": 3e-3, "sgd": 0.05, "hessian-sgd": 3e-3, "adamw": 3e-3, "hessian-adamw": 3e-3,
      "adabelief": 3e-3, "adahessian": 0.03, "sophiah": 0.06, "apollo": 0.01, "diffgrad": 4e-3, "adan": 4e-3,
      # the other curvature estimators around Adam and SGD (lrs from a coarse sweep on this workload)
      "hessian-adam-squared-grad": 3e-3, "hessian-adam-secant": 1e-2, "hessian-adam-secant-rms": 5e-3,
      "hessian-adam-hutchinson": 3e-3, "hessian-adam-gauss-newton": 5e-3, "hessian-sgd-squared-grad": 3e-3,
      "hessian-sgd-secant": 0.5, "hessian-sgd-secant-rms": 0.5, "hessian-sgd-hutchinson": 1e-4,
      "hessian-sgd-gauss-newton": 1e-4,
      # today's peers
      "soap": 3e-3, "muon": 0.02, "schedulefree-adamw": 2.5e-3, "shampoo": 3e-2, "kron": 1e-2, "lion": 1e-3,
      "prodigy": 1.0}
EXTRA = {"prodigy": {"d_coef": 1.0}}
PEERS = ("adabelief", "adahessian", "sophiah", "apollo", "diffgrad", "adan", "soap", "muon", "schedulefree-adamw",
         "shampoo", "kron", "lion", "prodigy")


def test_the_registered_arms():
    assert {n for n in LR if parse_wrapped(n) is None} == set(ARMS)  # the wrapped ones are resolved by name
    assert [a for a in ARMS if get_arm(a).second_order] == ["adahessian", "sophiah"]
    assert get_arm("adahessian").step == GraphStep(every=1) and get_arm("sophiah").step == GraphStep(every=10)
    assert isinstance(get_arm("schedulefree-adamw").step, ScheduleFreeStep)
    sampling = {n for n in LR if isinstance(get_arm(n).step, EstimatorStep)}
    assert sampling == {f"hessian-{b}-{e}" for b in ("adam", "sgd") for e in ("hutchinson", "gauss-newton")}
    assert not any(isinstance(a.step, EstimatorStep) for a in ARMS.values())
    for name, arm in ARMS.items():
        assert arm.normalises is NORMALISES.get(name), name  # every registered arm is classified
        assert arm.normalises is not None and arm.wraps is None, name
    for name, arm in ARMS.items():
        assert arm.name == name and arm.description and arm.available
        assert not isinstance(arm.step, (GraphStep, EstimatorStep, ScheduleFreeStep)) == isinstance(arm.step, PlainStep)
        assert arm.requires[:1] == (("pytorch_optimizer",) if name in PEERS else ("torch",))
    assert get_arm("adam").step is PLAIN and get_arm("adam").defaults["betas"] == (0.9, 0.999)
    assert get_arm("sgd").defaults["momentum"] == 0.9  # the arm's choice, not torch's 0
    assert get_arm("hessian-adam").defaults["curvature_beta"] == 0.99
    assert get_arm("prodigy").stackable is False
    assert get_arm("prodigy").space == SearchSpace({"lr": Fixed(1.0), "d_coef": Float(0.1, 10.0, log=True)})
    assert all(get_arm(n).space == SearchSpace({"lr": DEFAULT_LR}) for n in LR if n != "prodigy")
    for name, arm in ARMS.items():  # no implementation switch is a hyperparameter
        assert not {"foreach", "fused", "capturable", "differentiable", "maximize"} & set(arm.defaults), name


def test_every_estimator_is_an_arm_and_each_build_gets_its_own_estimator():
    for base in ("adam", "sgd"):  # hessian-<base>[-<estimator>]
        for estimator in ESTIMATORS:
            name = f"hessian-{base}" + ("" if estimator == "grad-diff" else f"-{estimator}")
            optimizer = get_arm(name).build([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
            assert isinstance(optimizer, HessianLRAdaptation) and optimizer.estimator.name == estimator
    arm = get_arm("hessian-sgd-hutchinson")
    a, b = (arm.build([torch.nn.Parameter(torch.zeros(2))], lr=0.1) for _ in range(2))
    assert a.estimator is not b.estimator and a.estimator.update_every == 1


def test_the_wrapped_arms_take_the_wrappers_hyperparameters_under_their_own_names():
    optimizer = get_arm("hessian-adam").build([torch.nn.Parameter(torch.zeros(2))], lr=0.1, curvature_beta=0.9,
                                              curvature_eps=1e-6, betas=(0.8, 0.99), eps=1e-7)
    assert optimizer.defaults["curvature_beta"] == 0.9 and optimizer.defaults["curvature_eps"] == 1e-6
    assert optimizer.defaults["betas"] == (0.8, 0.99) and optimizer.defaults["eps"] == 1e-7  # Adam's own eps
    assert optimizer.base_optimizer.defaults["eps"] == 1e-7


def test_muon_puts_matrices_in_its_muon_group_and_the_rest_in_adamw():
    weight, bias = torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(3))
    groups = get_arm("muon").build([weight, bias], lr=0.02).param_groups
    assert [(g["use_muon"], g["params"]) for g in groups] == [(True, [weight]), (False, [bias])]
    only_biases = get_arm("muon").build([bias], lr=0.02).param_groups  # no empty group
    assert [(g["use_muon"], g["params"]) for g in only_biases] == [(False, [bias])]


def test_graph_steps_follow_the_refresh_period():
    assert [get_arm("sophiah").step.needs_graph(s) for s in range(21)] == [s in (0, 10, 20) for s in range(21)]
    assert all(get_arm("adahessian").step.needs_graph(s) for s in range(3))
    assert get_arm("sophiah").step.describe() == "backward with create_graph=True every 10 steps"
    sophiah = get_arm("sophiah").build([torch.nn.Parameter(torch.zeros(2))], lr=0.01)
    assert sophiah.update_period == get_arm("sophiah").step.every  # the package's schedule


def test_second_order_arms_are_not_stacked_by_their_step():
    """Their optimizers differentiate the gradients' graph inside step(); K of them cannot share a
    graph, so their models train one at a time; the same for the sampling estimators."""
    for name in ("adahessian", "sophiah", "hessian-adam-hutchinson"):
        assert not get_arm(name).step.stacks and not get_arm(name).step.plain
    for name in ("adam", "muon", "schedulefree-adamw"):
        assert get_arm(name).step.stacks and get_arm(name).step.plain


@pytest.mark.parametrize("name", list(LR))
def test_every_arm_trains_one_epoch_and_lowers_the_loss(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no other warnings (deprecations, ...)
        warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")  # loop handles it
        run = train_run(WORKLOAD, get_arm(name), {"lr": LR[name], **EXTRA.get(name, {})}, epochs=1, seed=0)
    assert not run.diverged
    start, end = run.val_loss_curve
    drop = 0.01 if name == "apollo" else 0.1  # Apollo's default warm-up keeps its lr tiny for 500 steps
    assert end < start - drop, (name, start, end)
    assert 0.1 < run.test_accuracy <= 1
    assert run.steps_per_epoch == 35 and run.hyperparameters["lr"] == LR[name]


def test_missing_baselines_package_is_a_clear_error(monkeypatch):
    import importlib.util
    import sys

    real = importlib.util.find_spec
    monkeypatch.setitem(sys.modules, "pytorch_optimizer", None)  # import pytorch_optimizer raises ImportError
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "pytorch_optimizer"
                        else real(name, *a, **k))
    assert not get_arm("adabelief").available and get_arm("adabelief").missing_requirement() == "pytorch_optimizer"
    with pytest.raises(ValueError, match="'adabelief' needs the pytorch-optimizer package: pip install") as info:
        parse_arm_names("adam,adabelief")
    assert "\n" not in str(info.value)
    assert parse_arm_names("adam,sgd") == ("adam", "sgd")
    with pytest.raises(ValueError, match="Adan needs the pytorch-optimizer package"):
        get_arm("adan").build(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="Muon needs the pytorch-optimizer package"):
        get_arm("muon").build(torch.nn.Linear(2, 2).parameters(), lr=1e-3)


def test_names_are_parsed_and_unknown_ones_refused():
    assert parse_arm_names(" adam, muon ,adam,, ") == ("adam", "muon")
    assert parse_arm_names(["lion", "adam"]) == ("lion", "adam")
    for bad, message in [("no-such-optimizer", "unknown optimizer 'no-such-optimizer'; choose from adam, "),
                         ("", "at least one"), (" , ", "at least one"), (3, "comma-separated string or a list"),
                         (["adam", 3], "must be names")]:
        with pytest.raises(ValueError, match=message):
            parse_arm_names(bad)
    for bad in ("", None):
        with pytest.raises(ValueError, match="non-empty string"):
            get_arm(bad)


def test_register_refuses_a_second_arm_of_the_same_name():
    from hessian_lr.arms import register

    with pytest.raises(ValueError, match="an arm named 'adam' is already registered"):
        register(Arm("adam", torch.optim.Adam))


def test_muon_tunes_both_parts_with_one_lr():
    """The AdamW part of the muon arm keeps the package defaults' ratio to Muon's lr (3e-4 : 0.02)
    unless given its own."""
    from hessian_lr.arms.baselines import MUON_ADAMW_LR_RATIO

    params = [torch.nn.Parameter(torch.zeros(4, 3)), torch.nn.Parameter(torch.zeros(4))]
    groups = {g["use_muon"]: g["lr"] for g in get_arm("muon").build(params, lr=0.01).param_groups}
    assert groups == {True: 0.01, False: pytest.approx(MUON_ADAMW_LR_RATIO * 0.01)}
    assert MUON_ADAMW_LR_RATIO == pytest.approx(3e-4 / 0.02)
    own = get_arm("muon").build(params, lr=0.01, adamw_lr=1e-3).param_groups
    assert {g["use_muon"]: g["lr"] for g in own} == {True: 0.01, False: 1e-3}
