"""check_space refuses a space that does not fit its arm, before any training."""

from __future__ import annotations

import re

import pytest
import torch

from hessian_lr.arms import Arm, check_space, get_arm
from hessian_lr.tuning.space import DEFAULT_LR, Categorical, Fixed, Float, Int, SearchSpace

PARAMS = [torch.zeros(5, 4), torch.zeros(5)]


def refused(arm: Arm | str, space: dict, *fragments: str) -> str:
    arm = get_arm(arm) if isinstance(arm, str) else arm
    with pytest.raises(ValueError) as info:
        check_space(arm, SearchSpace(space), PARAMS)
    text = str(info.value)
    assert arm.name in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


@pytest.mark.parametrize("name", ["adam", "adabelief", "hessian-adam", "muon", "prodigy"])
def test_a_name_the_optimizer_does_not_take_is_refused(name):
    # AdaBelief (like every pytorch-optimizer class) swallows unknown **kwargs: the built
    # optimizer's defaults decide, not the constructor call succeeding.
    text = refused(name, {"lr": DEFAULT_LR, "foo": Float(0.0, 1.0)}, f"space of {name}: 'foo' is not a hyperparameter")
    assert "lr" in text.split("it takes")[1]  # the message lists what it takes
    refused(name, {"lr": DEFAULT_LR, "foo[1]": Float(0.0, 1.0)}, "'foo[1]' is not a hyperparameter")


def test_a_misspelt_hyperparameter_of_an_optimizer_that_swallows_kwargs():
    refused("adabelief", {"lr": DEFAULT_LR, "weight_decy": Fixed(0.1)}, "'weight_decy' is not a hyperparameter")
    refused("sgd", {"lr": DEFAULT_LR, "betas[0]": Float(0.8, 0.99)}, "'betas[0]' is not a hyperparameter")


def test_a_corner_the_optimizer_refuses():
    text = refused("adam", {"lr": DEFAULT_LR, "betas[1]": Float(0.9, 1.0)}, "space of adam: the optimizer refuses",
                   "'betas': (0.9, 1.0)", "Invalid beta parameter at index 1: 1.0")
    assert "\n" not in text
    refused("adam", {"lr": Float(-1.0, 1e-1)}, "Invalid learning rate: -1.0")  # the low corner
    refused("hessian-adam", {"lr": DEFAULT_LR, "curvature_beta": Float(0.5, 1.5)}, "the optimizer refuses")
    refused("sgd", {"lr": DEFAULT_LR, "momentum": Fixed(-0.5)}, "Invalid momentum value: -0.5")
    refused("sgd", {"lr": DEFAULT_LR, "momentum": Float(0.0, 0.9), "nesterov": Categorical((True, False))},
            "Nesterov momentum requires a momentum")  # the low corner: momentum 0 with nesterov
    refused("adam", {"lr": DEFAULT_LR, "betas": Fixed(0.5)}, "the optimizer refuses")  # not a tuple


def test_an_item_of_an_argument_without_a_tuple_default():
    refused("adam", {"lr": DEFAULT_LR, "eps[0]": Float(1e-9, 1e-6)},
            "space of adam: eps[0]: the optimizer declares no tuple default for 'eps'")
    refused("adam", {"lr": DEFAULT_LR, "betas[2]": Float(0.9, 0.99)}, "betas[2]: 'betas' has 2 items")


def test_a_factory_that_returns_no_optimizer():
    arm = Arm("list-maker", lambda params, lr: [params, lr])
    refused(arm, {"lr": DEFAULT_LR}, "optimizer 'list-maker': its factory returned a list, not a torch.optim.Optimizer")


def test_a_factory_that_raises_a_type_error_on_an_unknown_keyword():
    def plain(params, lr):
        return torch.optim.SGD(params, lr=lr)

    text = refused(Arm("plain-sgd", plain), {"lr": DEFAULT_LR, "momentum": Fixed(0.9)})
    assert "momentum" in text and re.search(r"not a hyperparameter|refuses", text)


@pytest.mark.parametrize(("name", "space"), [
    ("adam", {"lr": DEFAULT_LR}),
    ("adam", {"lr": DEFAULT_LR, "betas[0]": Float(0.8, 0.99), "betas[1]": Float(0.9, 0.9999),
              "amsgrad": Categorical((False, True)), "weight_decay": Fixed(0.0)}),
    ("sgd", {"lr": DEFAULT_LR, "momentum": Float(0.5, 0.99), "nesterov": Categorical((False, True))}),
    ("hessian-adam", {"lr": DEFAULT_LR, "curvature_beta": Float(0.9, 0.9999), "curvature_eps": Float(1e-12, 1e-6,
                                                                                                     log=True)}),
    ("muon", {"lr": DEFAULT_LR, "momentum": Float(0.8, 0.99), "adamw_betas[1]": Float(0.9, 0.99)}),
    ("prodigy", {"lr": Fixed(1.0), "d_coef": Float(0.1, 10.0, log=True)}),
    ("sophiah", {"lr": DEFAULT_LR, "update_period": Int(1, 20)}),
    ("soap", {"lr": DEFAULT_LR, "precondition_frequency": Int(1, 20)}),
])
def test_spaces_that_fit(name, space):
    check_space(get_arm(name), SearchSpace(space), PARAMS)


def test_the_default_space_of_every_arm_fits():
    from hessian_lr.arms import ARMS

    for arm in ARMS.values():
        check_space(arm, arm.space, PARAMS)


def test_check_space_leaves_the_given_tensors_alone():
    params = [torch.ones(3, 2)]
    check_space(get_arm("adam"), SearchSpace({"lr": DEFAULT_LR}), params)
    assert params[0].grad is None and not params[0].requires_grad and bool((params[0] == 1).all())
