"""Arms named by import path: a user's factory, Arm object or optimizer class, and the errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from hessian_lr.arms import Arm, get_arm, is_import_path, parse_arm_names, provenance
from hessian_lr.training import train, train_run
from hessian_lr.training.loop import Run
from hessian_lr.training.stacking import stacking_of
from hessian_lr.tuning.space import DEFAULT_LR, Float, SearchSpace
from hessian_lr.workloads import get_workload

WORKLOAD = get_workload("mnist1d-mlp")

USER_MODULE = '''
import torch
from hessian_lr.arms import Arm, TrainStep
from hessian_lr.tuning.space import Float, SearchSpace


def sgd_factory(params, lr, momentum=0.5):
    """SGD with momentum, written as a factory.

    More text that the description leaves out.
    """
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


class MySGD(torch.optim.Optimizer):
    """A user's own SGD."""

    def __init__(self, params, lr=0.1, scale=1.0):
        super().__init__(params, dict(lr=lr, scale=scale))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] * group["scale"])


def _adam(params, **hyperparameters):
    return torch.optim.Adam(params, **hyperparameters)


class CountingStep(TrainStep):
    def __init__(self):
        self.calls = []

    def train(self, optimizer):
        self.calls.append("train")

    def eval(self, optimizer):
        self.calls.append("eval")


ARM = Arm("my-adam", _adam, description="Adam by a user", space=SearchSpace({"lr": Float(1e-4, 1e-2, log=True)}),
          defaults={"betas": (0.9, 0.999)}, step=CountingStep(), relative_cost=1.5)
NOT_CALLABLE = 3
namespace = type("namespace", (), {"factory": staticmethod(sgd_factory)})
def returns_a_list(params, lr):
    return [params, lr]
'''

_names = itertools.count()


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A fresh module (a new name per test: resolved import paths are cached) on sys.path."""
    name = f"user_arms_{next(_names)}_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_factory_function(user_module):
    path = f"{user_module}:sgd_factory"
    assert is_import_path(path) and not is_import_path("adam")
    arm = get_arm(path)
    assert arm.name == arm.source == path and get_arm(path) is arm
    assert arm.description == f"{path} (imported): SGD with momentum, written as a factory."
    assert arm.defaults == {"momentum": 0.5} and arm.space == SearchSpace({"lr": DEFAULT_LR})
    assert arm.step.plain and arm.step.stacks and not arm.second_order and arm.requires == (user_module,)
    assert parse_arm_names(f"adam, {path}") == ("adam", path)
    run = train_run(WORKLOAD, arm, {"lr": 0.05, "momentum": 0.9}, epochs=1, seed=0)
    assert run.val_loss_curve[1] < run.val_loss_curve[0] - 0.1
    same = train_run(WORKLOAD, get_arm("sgd"), 0.05, epochs=1, seed=0)  # the built-in sgd: momentum 0.9
    assert run.val_loss_curve == pytest.approx(same.val_loss_curve, rel=1e-6)
    assert provenance(arm)["source"] == path
    assert provenance(arm)["packages"] == {user_module: {"distribution": None, "version": None}}


def test_an_arm_object_keeps_its_space_defaults_and_step(user_module):
    path = f"{user_module}:ARM"
    arm = get_arm(path)
    assert isinstance(arm, Arm) and arm.name == arm.source == path
    assert arm.space == SearchSpace({"lr": Float(1e-4, 1e-2, log=True)}) and arm.defaults == {"betas": (0.9, 0.999)}
    assert arm.description == "Adam by a user" and arm.relative_cost == 1.5
    assert parse_arm_names([path]) == (path,)
    run = train_run(WORKLOAD, arm, {"lr": 3e-3, "betas": (0.8, 0.99)}, epochs=2, seed=0)
    assert run.val_loss_curve[1] < run.val_loss_curve[0] - 0.1
    assert arm.step.calls == ["eval", "train", "eval", "train", "eval"]  # its own step object, called


def test_an_optimizer_class_written_by_the_user_trains_and_is_stacked_by_what_it_does(user_module):
    path = f"{user_module}:MySGD"
    arm = get_arm(path)
    assert arm.build.__name__ == "MySGD" and arm.defaults == {"lr": 0.1, "scale": 1.0}
    assert arm.description == f"{path} (imported): A user's own SGD."
    probe = stacking_of(arm, {"lr": 0.1, "scale": 1.0}, [(3, 2), (3,)])
    assert probe.stackable and probe.poolable  # elementwise and linear in the lr: never declared
    runs = [Run({"lr": 0.1, "scale": 1.0}, 0), Run({"lr": 0.2, "scale": 0.5}, 1), Run({"lr": 0.05, "scale": 1.0}, 2)]
    batched = train(WORKLOAD, arm, runs, epochs=2)
    for result, run in zip(batched, runs):
        alone = train_run(WORKLOAD, arm, run.hyperparameters, epochs=2, seed=run.seed)
        assert result.val_loss_curve == pytest.approx(alone.val_loss_curve, rel=1e-5)
        assert result.val_loss_curve[-1] < result.val_loss_curve[0] - 0.05
    # its own hyperparameter reaches it: lr 0.2 at scale 0.5 is lr 0.1 at scale 1
    halved = train_run(WORKLOAD, arm, {"lr": 0.2, "scale": 0.5}, epochs=2, seed=0)
    assert halved.val_loss_curve == pytest.approx(batched[0].val_loss_curve, rel=1e-6)


def test_torch_optimizer_classes_by_path_and_their_provenance():
    arm = get_arm("torch.optim:RMSprop")
    assert arm.build is torch.optim.RMSprop and arm.requires == ("torch",) and arm.defaults["alpha"] == 0.99
    run = train_run(WORKLOAD, arm, 1e-3, epochs=1, seed=0)
    assert run.val_loss_curve[1] < run.val_loss_curve[0] - 0.1
    info = provenance(arm)
    assert info["source"] == "torch.optim:RMSprop"
    assert info["packages"] == {"torch": {"distribution": "torch", "version": torch.__version__}}
    assert get_arm("torch.optim:lr_scheduler.StepLR").build is torch.optim.lr_scheduler.StepLR  # dotted attribute


def test_provenance_of_built_in_arms():
    import importlib.metadata

    muon = provenance(get_arm("muon"))
    assert muon["source"] == "pytorch_optimizer.Muon"
    assert muon["packages"] == {"pytorch_optimizer": {"distribution": "pytorch_optimizer",
                                                      "version": importlib.metadata.version("pytorch_optimizer")}}
    assert provenance(get_arm("adam"))["source"] == "torch.optim"
    assert provenance(get_arm("hessian-adam"))["source"] == "hessian_lr.optim"
    assert set(provenance(get_arm("hessian-adam"))["packages"]) == {"torch"}


def one_line_error(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        get_arm(path)
    text = str(info.value)
    assert text.startswith(f"optimizer {path!r}") and "\n" not in text, text
    assert info.value.__cause__ is None  # no chained traceback
    assert info.value.__context__ is None or info.value.__suppress_context__
    with pytest.raises(ValueError, match=message):
        parse_arm_names(f"adam,{path}")


def test_import_path_errors_are_one_clear_value_error(user_module, tmp_path):
    one_line_error("no_such_module_for_hessian_lr:factory",
                   "cannot import module 'no_such_module_for_hessian_lr': No module named")
    one_line_error(f"{user_module}.sub:factory", f"cannot import module '{user_module}.sub'")
    one_line_error(f"{user_module}:missing", f"module '{user_module}' has no attribute 'missing'")
    one_line_error(f"{user_module}:namespace.missing", "has no attribute 'namespace.missing'")
    one_line_error(f"{user_module}:NOT_CALLABLE", "is a int, not an Arm or an optimizer factory")
    one_line_error(f"{user_module}:", "an import path is 'package.module:name'")
    one_line_error(f":{user_module}", "an import path is 'package.module:name'")
    (tmp_path / f"{user_module}_broken.py").write_text("import torch\nraise RuntimeError('boom at import')\n")
    one_line_error(f"{user_module}_broken:factory",
                   f"importing module '{user_module}_broken' raised RuntimeError: boom at import")
    (tmp_path / f"{user_module}_needs.py").write_text("import a_dependency_nobody_has\n")
    one_line_error(f"{user_module}_needs:factory", "No module named 'a_dependency_nobody_has'")
    (tmp_path / f"{user_module}_syntax.py").write_text("def (:\n")
    one_line_error(f"{user_module}_syntax:factory", "raised SyntaxError")


def test_a_nested_attribute_path_resolves(user_module):
    arm = get_arm(f"{user_module}:namespace.factory")
    assert arm.defaults == {"momentum": 0.5}


def test_a_factory_returning_something_else_is_refused_before_training(user_module):
    from hessian_lr.arms import check_space

    arm = get_arm(f"{user_module}:returns_a_list")
    with pytest.raises(ValueError, match=f"optimizer '{user_module}:returns_a_list': its factory returned a list, "
                                         "not a torch.optim.Optimizer"):
        check_space(arm, arm.space, [torch.zeros(3)])
