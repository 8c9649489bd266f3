"""The reference: one model, one optimizer, nanoGPT-style (SingleModel through the epoch skeleton)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from hessian_lr.arms import Arm, EstimatorStep, GraphStep, get_arm
from hessian_lr.training import initial_model, train, train_run
from hessian_lr.training.loop import Run
from hessian_lr.workloads import get_workload

WORKLOAD = get_workload("mnist1d-mlp")
pytestmark = pytest.mark.filterwarnings(r"ignore:Using backward\(\) with create_graph=True")


def test_same_seed_gives_identical_runs_and_seeds_differ():
    a = train_run(WORKLOAD, get_arm("hessian-adam"), 3e-3, epochs=2, seed=7)
    b = train_run(WORKLOAD, get_arm("hessian-adam"), 3e-3, epochs=2, seed=7)
    c = train_run(WORKLOAD, get_arm("hessian-adam"), 3e-3, epochs=2, seed=8)
    assert a.val_loss_curve == b.val_loss_curve and (a.test_loss, a.test_accuracy) == (b.test_loss, b.test_accuracy)
    assert a.val_loss_curve != c.val_loss_curve
    assert (a.seed, c.seed) == (7, 8)


def test_curve_has_epoch_zero_and_every_epoch_and_learning_happens():
    run = train_run(WORKLOAD, get_arm("adam"), 3e-3, epochs=3, seed=0)
    assert len(run.val_loss_curve) == 4 and len(run.epoch_wall_s) == 3 and run.epochs == 3
    assert math.isclose(run.val_loss_curve[0], math.log(10), rel_tol=0.05)  # untrained: ~uniform
    assert run.val_loss_curve[-1] < run.val_loss_curve[0] - 0.3
    assert run.val_loss == run.val_loss_curve[-1] and 0.2 < run.test_accuracy <= 1
    assert run.lr == 3e-3 and run.hyperparameters == {"lr": 3e-3} and run.steps_per_epoch == 35
    assert all(0 < a < b for a, b in zip(run.epoch_wall_s, run.epoch_wall_s[1:])) and run.wall_s == run.epoch_wall_s[-1]
    assert not run.diverged and run.to_dict()["val_loss_curve"] == run.val_loss_curve


def test_paired_seeds_give_every_arm_the_same_initial_weights():
    first, second = initial_model(WORKLOAD, 3), initial_model(WORKLOAD, 3)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    other = initial_model(WORKLOAD, 4)
    assert not torch.equal(next(first.parameters()), next(other.parameters()))
    starts = {name: train_run(WORKLOAD, get_arm(name), 1e-3, epochs=1, seed=3).val_loss_curve[0]
              for name in ("adam", "hessian-adam", "sgd", "muon", "hessian-adam-hutchinson")}
    assert len(set(starts.values())) == 1, starts
    # the batched engine starts every model from the same weights (its loss: batched GEMMs)
    batched = train(WORKLOAD, get_arm("adam"), [Run({"lr": 1e-3}, 3), Run({"lr": 2e-3}, 4)], epochs=1)
    assert batched[0].val_loss_curve[0] == pytest.approx(starts["adam"], rel=1e-6)


def test_divergence_ends_the_run_and_is_marked():
    sgd = Arm("sgd-huge", lambda params, lr: torch.optim.SGD(params, lr=lr))
    counted = []
    run = train_run(WORKLOAD, sgd, 1e6, epochs=5, seed=0, progress=counted.append)
    assert run.diverged and run.val_loss is None and run.test_loss is None and run.test_accuracy is None
    assert run.val_loss_curve[-1] is None and all(v is not None for v in run.val_loss_curve[:-1])
    assert len(run.val_loss_curve) < 7 and len(run.epoch_wall_s) == len(run.val_loss_curve) - 1
    assert sum(counted) == 5  # the epochs never trained count as done


def test_a_non_finite_gradient_that_hessian_lr_adaptation_refuses_ends_the_run():
    run = train_run(WORKLOAD, get_arm("hessian-adam"), 1e30, epochs=3, seed=0)
    assert run.diverged and len(run.val_loss_curve) == 2 and run.val_loss_curve[-1] is None


def _spy(name: str, seen: list, step=None) -> Arm:
    base = get_arm(name)

    def build(params, **hyperparameters):
        params = list(params)
        seen.extend(params)
        return base.build(params, **hyperparameters)

    return Arm(f"spy-{name}", build, step=step or base.step)


@pytest.mark.parametrize(("name", "lr"), [("sophiah", 0.06), ("adahessian", 0.03)])
def test_a_second_order_arm_leaves_no_graph_behind(name, lr):
    """After training, no parameter holds a gradient (and so no graph): memory cannot grow."""
    seen = []
    run = train_run(WORKLOAD, _spy(name, seen), lr, epochs=1, seed=0)
    assert seen and all(p.grad is None for p in seen) and not run.diverged


@dataclasses.dataclass(frozen=True, repr=False)
class RecordingGraphStep(GraphStep):
    calls: list = dataclasses.field(default_factory=list, compare=False)

    def backward(self, optimizer, loss, *, logits, step):
        self.calls.append((step, self.needs_graph(step)))
        super().backward(optimizer, loss, logits=logits, step=step)


def test_sophiahs_graph_schedule_matches_its_update_period():
    """SophiaH refreshes its Hessian every ``update_period`` steps from a graph in p.grad; the
    engine's step counter runs across epochs and builds the graph exactly on those steps."""
    step = RecordingGraphStep(every=10)
    run = train_run(WORKLOAD, _spy("sophiah", [], step=step), 0.06, epochs=2, seed=0)
    assert not run.diverged
    assert [s for s, _ in step.calls] == list(range(70))  # 35 steps an epoch, counted on
    assert [s for s, graph in step.calls if graph] == [0, 10, 20, 30, 40, 50, 60]
    # the schedule matters: a refresh step without a graph raises in SophiaH
    with pytest.raises(RuntimeError, match="does not require grad"):
        train_run(WORKLOAD, _spy("sophiah", [], step=GraphStep(every=7)), 0.06, epochs=1, seed=0)


def test_an_estimator_step_gets_its_models_own_logits():
    seen = []

    class Recording(EstimatorStep):
        def backward(self, optimizer, loss, *, logits, step):
            seen.append((tuple(logits.shape), logits.requires_grad, step))
            super().backward(optimizer, loss, logits=logits, step=step)

    arm = dataclasses.replace(get_arm("hessian-adam-gauss-newton"), name="recording-gn", step=Recording())
    run = train_run(WORKLOAD, arm, 5e-3, epochs=1, seed=0)
    assert run.val_loss_curve[1] < run.val_loss_curve[0]
    assert seen[0] == ((100, 10), True, 0) and [s for *_, s in seen] == list(range(35))


class _ModeRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 10))
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.modes.append((self.training, torch.is_grad_enabled()))
        return self.net(x)


def test_the_model_trains_in_train_mode_and_is_evaluated_in_eval_mode_without_grad():
    models = []

    def build():
        models.append(_ModeRecorder())
        return models[-1]

    workload = dataclasses.replace(WORKLOAD, name="mnist1d-mode-recorder", build_model=build)
    train_run(workload, get_arm("adam"), 1e-3, epochs=2, seed=0)
    modes = models[0].modes
    assert modes.count((True, True)) == 70  # every training step
    assert modes.count((False, False)) == 3 + 1  # validation at epochs 0..2 and the test set
    assert len(modes) == 74


def test_one_at_a_time_results_come_in_the_order_of_the_runs():
    runs = [Run({"lr": 2e-3}, 1), Run({"lr": 1e-3, "betas": (0.8, 0.99)}, 0), Run({"lr": 1e-3}, 1)]
    results = train(WORKLOAD, get_arm("adam"), runs, epochs=1, batch=False)
    assert [(r.hyperparameters, r.seed) for r in results] == [(dict(r.hyperparameters), r.seed) for r in runs]
    alone = train_run(WORKLOAD, get_arm("adam"), {"lr": 1e-3, "betas": (0.8, 0.99)}, epochs=1, seed=0)
    assert results[1].val_loss_curve == alone.val_loss_curve
