import math

import torch

from hessian_lr.arms import Arm, get_arm
from hessian_lr.training import train_run
from hessian_lr.workloads import get_workload

WORKLOAD = get_workload("mnist1d-mlp")


def test_same_seed_gives_identical_runs_and_seeds_differ():
    a = train_run(WORKLOAD, get_arm("hessian-adam"), 3e-3, epochs=2, seed=7)
    b = train_run(WORKLOAD, get_arm("hessian-adam"), 3e-3, epochs=2, seed=7)
    c = train_run(WORKLOAD, get_arm("hessian-adam"), 3e-3, epochs=2, seed=8)
    assert a.val_loss_curve == b.val_loss_curve and a.test_accuracy == b.test_accuracy
    assert a.val_loss_curve != c.val_loss_curve


def test_curve_has_epoch_zero_and_every_epoch_and_learning_happens():
    run = train_run(WORKLOAD, get_arm("adam"), 3e-3, epochs=3, seed=0)
    assert len(run.val_loss_curve) == 4 and len(run.epoch_wall_s) == 3
    assert math.isclose(run.val_loss_curve[0], math.log(10), rel_tol=0.05)  # untrained: ~uniform
    assert run.val_loss_curve[-1] < run.val_loss_curve[0] - 0.3
    assert run.val_loss == run.val_loss_curve[-1] and 0.2 < run.test_accuracy <= 1


def test_paired_seeds_give_every_arm_the_same_initial_weights():
    adam = train_run(WORKLOAD, get_arm("adam"), 1e-3, epochs=1, seed=3)
    hessian = train_run(WORKLOAD, get_arm("hessian-adam"), 1e-3, epochs=1, seed=3)
    assert adam.val_loss_curve[0] == hessian.val_loss_curve[0]


def test_divergence_ends_the_run_and_is_marked():
    sgd = Arm("sgd-huge", "", lambda params, lr: torch.optim.SGD(params, lr=lr))
    run = train_run(WORKLOAD, sgd, 1e6, epochs=5, seed=0)
    assert run.diverged and run.val_loss is None and run.test_loss is None
    assert run.val_loss_curve[-1] is None and len(run.val_loss_curve) < 7
