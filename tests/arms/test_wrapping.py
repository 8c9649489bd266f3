"""Any arm wrapped in HessianLRAdaptation: by name for every arm, the refusals, the composed
training steps, hand-computed steps of non-Adam bases, and the same numbers for today's names."""

from __future__ import annotations

import math

import pytest
import torch

from hessian_lr.arms import (ARMS, PLAIN, Arm, EstimatorStep, GraphStep, PlainStep, SampledStep, ScheduleFreeStep,
                             TrainStep, check_space, get_arm, parse_arm_names, provenance, wrap)
from hessian_lr.arms.names import REFERENCE_ESTIMATOR, wrapped_name
from hessian_lr.arms.wrapping import samples_in_backward
from hessian_lr.config import arm_space
from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.optim.estimators import ESTIMATORS, Hutchinson, Secant
from hessian_lr.training import train_run
from hessian_lr.tuning.space import Float
from hessian_lr.workloads import get_workload

WORKLOAD = get_workload("mnist1d-mlp")
PARAMS = [torch.zeros(6, 5), torch.zeros(6)]  # a weight matrix and a bias: every optimizer takes them
SECOND_ORDER = {"adahessian", "sophiah"}  # their step differentiates p.grad
WRAPPABLE = [name for name in ARMS if name not in SECOND_ORDER]


def fresh(params):
    return [p.detach().clone().requires_grad_(True) for p in params]


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
@pytest.mark.parametrize("base_name", WRAPPABLE)
def test_every_arm_wraps_with_every_estimator_keeping_its_own_step_and_space(base_name, estimator):
    base = get_arm(base_name)
    name = wrapped_name(base_name, estimator)
    arm = get_arm(name)
    assert arm is get_arm(name) and arm.name == name  # one object per name (the stacking probe caches by build)
    assert arm.wraps.base is base and arm.wraps.estimator == estimator
    assert arm.space is base.space and arm.stackable == base.stackable and arm.normalises is base.normalises
    assert arm.defaults["curvature_beta"] == 0.99 and arm.defaults["curvature_eps"] == 1e-8
    assert all(arm.defaults[key] == value for key, value in base.defaults.items())
    assert set(base.requires) <= set(arm.requires) and "torch" in arm.requires
    if not samples_in_backward(estimator):
        assert arm.step is base.step
    elif base.step is PLAIN:
        assert type(arm.step) is EstimatorStep
    else:  # schedule-free: the estimator's backward, the base's train/eval
        assert arm.step == SampledStep(base.step)
    assert arm.relative_cost >= base.relative_cost
    optimizer = arm.build(fresh(PARAMS), **{"lr": 1e-3, **dict(arm.space.fixed)})
    assert isinstance(optimizer, HessianLRAdaptation) and optimizer.estimator.name == estimator
    assert type(optimizer.base_optimizer) is type(base.build(fresh(PARAMS), **{"lr": 1e-3, **dict(base.space.fixed)}))
    info = provenance(arm)
    assert info["wraps"]["base"] == base_name and info["wraps"]["estimator"] == estimator
    assert info["normalises"] is base.normalises and info["source"] == "hessian_lr.optim"


@pytest.mark.parametrize("base_name", WRAPPABLE)
def test_the_wide_space_of_a_wrapped_arm_tunes_the_curvature_hyperparameters_and_fits(base_name):
    arm = get_arm(f"hessian-{base_name}")
    wide = arm_space(arm, "wide", (1e-4, 1e-1), None)
    assert wide["curvature_beta"] == Float(0.9, 0.9999) and wide["curvature_eps"] == Float(1e-12, 1e-6, log=True)
    bare = arm_space(get_arm(base_name), "wide", (1e-4, 1e-1), None)
    assert dict(wide) == {**dict(bare), "curvature_beta": Float(0.9, 0.9999),
                          "curvature_eps": Float(1e-12, 1e-6, log=True)}
    check_space(arm, wide, PARAMS)  # the optimizer accepts both corners
    assert "curvature_beta" not in bare


def one_line(name: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        get_arm(name)
    assert str(info.value) == message
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")[:40]):
        parse_arm_names(["adam", name])


def test_arms_that_cannot_be_wrapped_are_refused_with_the_reason_in_one_line():
    for base in sorted(SECOND_ORDER):
        for estimator in ESTIMATORS:
            name = wrapped_name(base, estimator)
            one_line(name, f"optimizer {name!r}: {base}'s step differentiates p.grad (a Hessian-vector product), "
                           "which the wrapper replaces by rescaled gradients without a graph; it cannot be wrapped")
    one_line("hessian-hessian-adam", "optimizer 'hessian-hessian-adam': hessian-adam is already wrapped in "
                                     "HessianLRAdaptation; an arm is wrapped once")
    one_line("hessian-hessian-lion-secant", "optimizer 'hessian-hessian-lion-secant': hessian-lion is already wrapped "
                                            "in HessianLRAdaptation; an arm is wrapped once")
    one_line("hessian-adam-grad-diff", "optimizer 'hessian-adam-grad-diff': grad-diff is the default estimator; name "
                                       "it 'hessian-adam'")


def test_an_unknown_suffix_names_the_base_and_lists_the_estimators():
    with pytest.raises(ValueError) as info:
        get_arm("hessian-adam-foo")
    text = str(info.value)
    assert text.startswith("unknown optimizer 'hessian-adam-foo': 'adam-foo' is not an arm, and what follows "
                           "'hessian-<arm>-' must be an estimator (grad-diff, squared-grad, secant, secant-rms, "
                           "hutchinson, gauss-newton); arms: adam, sgd, adamw, ")
    assert "\n" not in text
    with pytest.raises(ValueError, match="unknown optimizer 'nope'; choose from adam, .*hessian-<arm>"):
        get_arm("nope")


def test_a_sampling_estimator_is_refused_around_a_base_with_a_backward_of_its_own():
    class OwnBackward(TrainStep):
        plain = False

        def backward(self, optimizer, loss, *, logits, step):
            loss.backward(retain_graph=True)

        def describe(self):
            return "a backward that keeps the graph"

    base = Arm("mine", torch.optim.SGD, description="SGD with its own backward", step=OwnBackward())
    assert wrap(base, "secant").step is base.step  # gradient-only estimators keep it
    with pytest.raises(ValueError) as info:
        wrap(base, "hutchinson")
    assert str(info.value) == ("optimizer 'hessian-mine-hutchinson': the hutchinson estimator takes its sample in a "
                               "backward of its own, but mine's step has its own backward (a backward that keeps the "
                               "graph); wrap it with a gradient-only estimator")
    with pytest.raises(ValueError, match="unknown estimator 'oracle'; choose from grad-diff, "):
        wrap(base, "oracle")
    assert not isinstance(get_arm("adahessian").step, PlainStep) and isinstance(get_arm("adahessian").step, GraphStep)


def test_todays_names_keep_their_definition():
    """hessian-adam & co. as before the wrapping was generic: same descriptions, sources, steps
    and costs (the report reads them from results.json)."""
    adam = get_arm("hessian-adam")
    assert adam.description == ("HessianLRAdaptation(Adam (fused), default betas/eps), grad-diff estimator, "
                                "curvature_beta=0.99, curvature_eps=1e-08")
    assert adam.source == "hessian_lr.optim" and adam.requires == ("torch",) and adam.step is PLAIN
    assert adam.relative_cost == 1.2 and adam.build.__name__ == "hessian_adam_grad_diff"
    assert dict(adam.defaults) == {**get_arm("adam").defaults, "curvature_beta": 0.99, "curvature_eps": 1e-8}
    hutchinson = get_arm("hessian-sgd-hutchinson")
    assert hutchinson.description == ("HessianLRAdaptation(SGD, momentum 0.9), hutchinson estimator, update_every=1, "
                                      "n_samples=1, curvature_beta=0.99, curvature_eps=1e-08")
    assert type(hutchinson.step) is EstimatorStep and hutchinson.relative_cost == 2.5
    assert get_arm("hessian-adam-gauss-newton").relative_cost == 1.8
    assert provenance(get_arm("hessian-adamw"))["step"] == "plain backward"


@pytest.mark.parametrize("name, reference", [
    ("hessian-adam", lambda params, **hp: HessianLRAdaptation(
        torch.optim.Adam(params, fused=True, lr=hp["lr"]))),
    ("hessian-sgd-secant", lambda params, **hp: HessianLRAdaptation(
        torch.optim.SGD(params, lr=hp["lr"], momentum=0.9), estimator=Secant())),
    ("hessian-adam-hutchinson", lambda params, **hp: HessianLRAdaptation(
        torch.optim.Adam(params, fused=True, lr=hp["lr"]), estimator=Hutchinson(update_every=1, n_samples=1))),
])
def test_todays_names_train_bit_for_bit_as_the_wrapper_built_by_hand(name, reference):
    arm = get_arm(name)
    by_hand = Arm("by-hand", reference, step=arm.step)
    lr = {"hessian-sgd-secant": 0.5}.get(name, 3e-3)
    ours, theirs = (train_run(WORKLOAD, a, {"lr": lr}, epochs=1, seed=3) for a in (arm, by_hand))
    assert ours.val_loss_curve == theirs.val_loss_curve and ours.test_loss == theirs.test_loss
    assert ours.val_loss_curve[-1] < ours.val_loss_curve[0] - 0.05


def grad_diff_scale(grads: list[list[float]], beta: float = 0.99, eps: float = 1e-8) -> list[list[float]]:
    """The write-up's rescaled gradients, by hand: d = g_t - g_{t-1} (g_0 = 0),
    h_t = beta h + (1 - beta) d^2, g_t / sqrt(h_t / (1 - beta^t) + eps)."""
    h, prev, out = [0.0] * len(grads[0]), [0.0] * len(grads[0]), []
    for t, g in enumerate(grads, start=1):
        h = [beta * hi + (1 - beta) * (gi - pi) ** 2 for hi, gi, pi in zip(h, g, prev)]
        out.append([gi / math.sqrt(hi / (1 - beta**t) + eps) for gi, hi in zip(g, h)])
        prev = g
    return out


GRADS = [[0.5, -2.0, 1e-5], [0.3, -1.0, 2e-5]]
START = [1.0, -2.0, 0.5]


def stepped(name: str, **hyperparameters):
    """Two steps of the named arm on one float64 parameter with the gradients GRADS."""
    param = torch.nn.Parameter(torch.tensor(START, dtype=torch.float64))
    optimizer = get_arm(name).build([param], **hyperparameters)
    for g in GRADS:
        gradient = torch.tensor(g, dtype=torch.float64)
        param.grad = gradient
        optimizer.step()
        assert param.grad is gradient and param.grad.tolist() == g  # the user's gradient, untouched
    return param, optimizer


def test_a_wrapped_sgd_steps_on_the_rescaled_gradient_by_hand():
    (r1, r2) = grad_diff_scale(GRADS)
    assert r1[0] == pytest.approx(0.5 / math.sqrt(0.25 + 1e-8)) and r1[2] == pytest.approx(1e-5 / math.sqrt(1.01e-8))
    lr, momentum = 0.1, 0.9  # the sgd arm's momentum
    buf1 = r1
    buf2 = [momentum * b + r for b, r in zip(buf1, r2)]
    expected = [p - lr * b1 - lr * b2 for p, b1, b2 in zip(START, buf1, buf2)]
    param, optimizer = stepped("hessian-sgd", lr=lr)
    assert param.tolist() == pytest.approx(expected, rel=1e-13, abs=1e-15)
    assert optimizer.base_optimizer.state[param]["momentum_buffer"].tolist() == pytest.approx(buf2, rel=1e-13)


def test_a_wrapped_lion_steps_on_the_rescaled_gradient_by_hand():
    """Lion (pytorch-optimizer): u = sign(beta1 m + (1 - beta1) g), m <- beta2 m + (1 - beta2) g,
    p <- p - lr u, with g the rescaled gradient: its momentum holds the rescaled gradients."""
    (r1, r2) = grad_diff_scale(GRADS)
    lr, beta1, beta2 = 0.01, 0.9, 0.99  # the package's betas
    m1 = [(1 - beta2) * r for r in r1]
    u2 = [math.copysign(1.0, beta1 * m + (1 - beta1) * r) for m, r in zip(m1, r2)]
    m2 = [beta2 * m + (1 - beta2) * r for m, r in zip(m1, r2)]
    expected = [p - lr * math.copysign(1.0, r) - lr * u for p, r, u in zip(START, r1, u2)]
    param, optimizer = stepped("hessian-lion", lr=lr)
    assert param.tolist() == pytest.approx(expected, rel=1e-15)
    assert optimizer.base_optimizer.state[param]["exp_avg"].tolist() == pytest.approx(m2, rel=1e-13)
    raw = [beta2 * (1 - beta2) * a + (1 - beta2) * b for a, b in zip(*GRADS)]
    assert m2 != pytest.approx(raw, rel=1e-3)  # the unscaled gradients would leave another momentum


def test_a_wrapped_schedule_free_arm_trains_and_evaluates_at_the_averaged_point_as_its_base_would():
    """hessian-schedulefree-adamw: the base's train()/eval() reach it through the wrapper, and its
    parameters follow the bare Schedule-Free AdamW fed the rescaled gradients, at the training
    point and at the averaged point it is evaluated at."""
    arm, bare_arm = get_arm("hessian-schedulefree-adamw"), get_arm("schedulefree-adamw")
    assert arm.step is bare_arm.step and isinstance(arm.step, ScheduleFreeStep)
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(4, 3, dtype=torch.float64, generator=generator)
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    wrapped, bare = arm.build([ours], lr=0.05), bare_arm.build([theirs], lr=0.05)
    grads = [torch.randn(4, 3, dtype=torch.float64, generator=generator).tolist() for _ in range(4)]
    flat = [sum(g, []) for g in grads]
    rescaled = grad_diff_scale(flat)
    for epoch in range(2):
        arm.step.train(wrapped)
        bare_arm.step.train(bare)
        for g, r in zip(grads[2 * epoch: 2 * epoch + 2], rescaled[2 * epoch: 2 * epoch + 2]):
            ours.grad = torch.tensor(g, dtype=torch.float64)
            theirs.grad = torch.tensor(r, dtype=torch.float64).view(4, 3)
            wrapped.step()
            bare.step()
        torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-12, atol=1e-14)
        training_point = ours.detach().clone()
        arm.step.eval(wrapped)
        bare_arm.step.eval(bare)
        torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-12, atol=1e-14)
        assert not torch.allclose(ours.detach(), training_point)  # moved to the averaged point
        assert wrapped.param_groups[0]["train_mode"] is False
    assert not hasattr(get_arm("hessian-adam").build([torch.nn.Parameter(start.clone())], lr=0.1), "train")


def test_a_sampling_estimator_around_a_schedule_free_base_keeps_its_train_and_eval():
    arm = get_arm("hessian-schedulefree-adamw-hutchinson")
    assert arm.step.describe() == ("optimizer.backward(loss, logits=logits); the base's optimizer.train() before "
                                   "training, optimizer.eval() before evaluation")
    assert not arm.step.stacks and not arm.step.plain
    run = train_run(WORKLOAD, arm, {"lr": 2.5e-3}, epochs=2, seed=0)
    assert not run.diverged and run.val_loss_curve[-1] < run.val_loss_curve[0] - 0.1


@pytest.mark.parametrize("name, lr", [("hessian-lion", 1e-3), ("hessian-adabelief", 3e-3),
                                      ("hessian-schedulefree-adamw", 2.5e-3), ("hessian-soap-secant", 1e-2)])
def test_wrapped_peers_train(name, lr):
    run = train_run(WORKLOAD, get_arm(name), {"lr": lr}, epochs=1, seed=0)
    assert not run.diverged and run.val_loss_curve[-1] < run.val_loss_curve[0] - 0.1, run.val_loss_curve


def test_the_reference_estimator_is_the_default():
    assert get_arm("hessian-adam").wraps.estimator == REFERENCE_ESTIMATOR
    assert get_arm("hessian-adam").wraps.options == {}
    assert get_arm("hessian-lion-hutchinson").wraps.options == {"update_every": 1, "n_samples": 1}


USER_MODULE = '''
import torch


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
'''


def test_wrapped_peer_import_path_and_declared_arms_through_the_console_script(tmp_path):
    """hessian-lion (pytorch-optimizer), a user's class wrapped with the secant estimator, and an
    [arms.NAME] table with estimator options: tuned in two worker processes (which resolve the
    declared arm from the config they are sent) with the wide space, in results.json with their
    provenance, and `hessian-lr worker` rebuilds the declared arm from the study's stored config."""
    import json
    import os
    import subprocess
    import sys

    import optuna

    from hessian_lr.pipeline import run_worker
    from hessian_lr.tuning import storage_for

    (tmp_path / "my_optimizers.py").write_text(USER_MODULE)
    (tmp_path / "run.toml").write_text(
        'optimizers = "adam,hessian-lion,hessian-my_optimizers:MySGD-secant,hutch5"\ntrials = 2\nepochs = 1\n'
        'seeds = 1\nablation = false\nworkers = 2\nspace = "wide"\n'
        '[arms.hutch5]\nbase = "adabelief"\nestimator = "hutchinson"\nupdate_every = 5\n')
    proc = subprocess.run([sys.executable, "-m", "hessian_lr.cli", "compare", "--config", "run.toml", "--out", "run",
                           "--quiet"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    arms = data["optimizers"]
    assert list(arms) == ["adam", "hessian-lion", "hessian-my_optimizers:MySGD-secant", "hutch5"]
    assert data["config"]["arms"] == {"hutch5": {"base": "adabelief", "estimator": "hutchinson", "update_every": 5}}
    lion, mine, hutch = arms["hessian-lion"], arms["hessian-my_optimizers:MySGD-secant"], arms["hutch5"]
    assert lion["source"]["wraps"] == {"base": "lion", "source": "pytorch_optimizer.Lion", "estimator": "grad-diff",
                                       "options": {}}
    assert lion["source"]["normalises"] is True and set(lion["source"]["packages"]) == {"pytorch_optimizer", "torch"}
    assert set(lion["best_params"]) == {"lr", "betas", "weight_decay", "curvature_beta", "curvature_eps"}  # wide
    assert mine["source"]["wraps"]["base"] == "my_optimizers:MySGD" and mine["source"]["normalises"] is None
    assert set(mine["best_params"]) == {"lr", "curvature_beta", "curvature_eps"}  # MySGD has no wide hyperparameter
    assert mine["source"]["packages"]["my_optimizers"] == {"distribution": None, "version": None}
    assert hutch["source"]["wraps"]["options"] == {"update_every": 5, "n_samples": 1}
    assert hutch["source"]["step"] == "optimizer.backward(loss, logits=logits)"
    assert all(not arm["final"]["diverged"] for arm in arms.values())
    journal = str(tmp_path / "run" / "optuna.journal")

    def trials_per_study() -> dict[str, int]:
        storage = storage_for(journal, tmp_path)
        return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}

    before = trials_per_study()
    cwd, path = os.getcwd(), list(sys.path)
    os.chdir(tmp_path)  # the user's module is found in the current folder, as by the console script
    try:
        names = run_worker(journal, "compare")
    finally:  # this process imported the user's module: later tests' modules of that name are theirs
        os.chdir(cwd)
        sys.path[:] = path
        sys.modules.pop("my_optimizers", None)
    assert sorted(names) == sorted(before) and any(".hutch5." in name for name in names)
    assert trials_per_study() == before == {name: 2 for name in names}  # the same studies, found complete
