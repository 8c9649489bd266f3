"""The workload contract for real training: BatchNorm and dropout, loaders, step budgets,
evaluation intervals, workload metrics, precisions and devices — all through the one skeleton."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from hessian_lr.arms import get_arm
from hessian_lr.training import Placement, Run, can_stack, initial_model, resolve_placement, train, train_run
from hessian_lr.training.records import ModelRNG
from hessian_lr.workloads import Metric, bits_per_token, get_workload, steps_to_accuracy

sys.path.insert(0, str(Path(__file__).parent))
import contract_workloads as cw  # noqa: E402

ADAM = get_arm("adam")


def _eval_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Row-weighted mean cross-entropy over minibatches of ``batch`` rows."""
    total = 0.0
    for i in range(0, len(x), batch):
        total += float(torch.nn.functional.cross_entropy(model(x[i:i + batch]), y[i:i + batch])) * len(x[i:i + batch])
    return total / len(x)


def test_a_batchnorm_dropout_model_trains_one_at_a_time_under_the_default_batched_settings():
    assert not can_stack(cw.bn_dropout, ADAM) and can_stack(get_workload("mnist1d-mlp"), ADAM)
    runs = train(cw.bn_dropout, ADAM, [Run({"lr": 1e-2}, 0), Run({"lr": 3e-3}, 1)], epochs=2, batch=True)
    alone = [train_run(cw.bn_dropout, ADAM, lr, epochs=2, seed=seed) for lr, seed in ((1e-2, 0), (3e-3, 1))]
    assert [r.val_loss_curve for r in runs] == [r.val_loss_curve for r in alone]
    assert all(len(r.val_loss_curve) == 3 and not r.diverged for r in runs)


def test_evaluation_is_in_eval_mode_without_gradients_in_minibatches():
    run = train_run(cw.bn_dropout, ADAM, 1e-2, epochs=1, seed=0)
    model = initial_model(cw.bn_dropout, 0)
    data = cw.splits()
    with torch.no_grad():
        eval_mode = _eval_loss(model.eval(), data.x_val, data.y_val, 16)
        train_mode = _eval_loss(model.train(), data.x_val, data.y_val, 16)
    assert run.val_loss_curve[0] == pytest.approx(eval_mode, rel=1e-6)
    assert abs(train_mode - eval_mode) > 1e-3  # BatchNorm's batch statistics and dropout would show


def test_dropout_draws_from_the_runs_own_stream():
    # Another draw from the global RNG between steps (another lane's model) changes nothing.
    reference = train_run(cw.bn_dropout, ADAM, 1e-2, epochs=2, seed=3)
    active = ModelRNG.active

    def noisy(self):
        torch.rand(7)  # what another thread's model would draw from the global stream
        return active(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ModelRNG, "active", noisy)
        again = train_run(cw.bn_dropout, ADAM, 1e-2, epochs=2, seed=3)
    assert again.val_loss_curve == reference.val_loss_curve


def test_a_loader_fed_workload_sees_the_same_batches_for_the_same_seed():
    cw.SEEN.clear()
    a = train_run(cw.loader_fed, ADAM, 1e-2, epochs=2, seed=5)
    first = list(cw.SEEN)
    cw.SEEN.clear()
    b = train_run(cw.loader_fed, ADAM, 1e-2, epochs=2, seed=5)
    second = list(cw.SEEN)
    cw.SEEN.clear()
    c = train_run(cw.loader_fed, ADAM, 1e-2, epochs=2, seed=6)
    assert len(first) == 2 * 6 and all(torch.equal(p, q) for p, q in zip(first, second))
    assert not all(torch.equal(p, q) for p, q in zip(first, cw.SEEN))
    assert a.val_loss_curve == b.val_loss_curve != c.val_loss_curve
    assert a.test_loss == b.test_loss and a.steps_per_epoch == 6
    assert not can_stack(cw.loader_fed, ADAM)


def test_a_step_budget_and_an_evaluation_interval_index_the_curve_by_steps():
    run = train_run(cw.bn_dropout, ADAM, 1e-2, steps=14, eval_every=4, seed=0)
    assert run.eval_steps == [0, 4, 8, 12, 14] and len(run.val_loss_curve) == 5 and len(run.epoch_wall_s) == 4
    assert run.steps == 14 and run.epochs == 3 and run.steps_per_epoch == 6
    per_epoch = train_run(cw.bn_dropout, ADAM, 1e-2, epochs=2, eval_every=6, seed=0)
    plain = train_run(cw.bn_dropout, ADAM, 1e-2, epochs=2, seed=0)
    assert per_epoch.eval_steps == [0, 6, 12] and per_epoch.val_loss_curve == plain.val_loss_curve
    assert "eval_steps" not in plain.to_dict() and "steps" not in plain.to_dict()
    stacked = train(get_workload("digits-softmax"), ADAM, [Run({"lr": 1e-2}, 0), Run({"lr": 1e-3}, 0)],
                    steps=25, eval_every=10)
    assert [r.eval_steps for r in stacked] == [[0, 10, 20, 25]] * 2


def test_workload_metrics_are_recorded_per_run():
    import dataclasses

    work = dataclasses.replace(cw.bn_dropout, metrics=(bits_per_token(), steps_to_accuracy(0.2),
                                                       Metric("twice", lambda e: 2 * e["val_loss"])))
    run = train_run(work, ADAM, 1e-2, epochs=2, seed=0)
    assert run.metrics["val_bits_per_char"] == pytest.approx(run.val_loss / math.log(2))
    assert run.metrics["twice"] == 2 * run.val_loss
    first = next(i for i, a in enumerate(run.val_accuracy_curve) if a >= 0.2)
    assert run.metrics["steps_to_target"] == [0, 6, 12][first]
    assert run.to_dict()["metrics"] == run.metrics


def test_bf16_on_cpu_trains_and_differs_from_fp32():
    bf16 = train_run(cw.bn_dropout, ADAM, 1e-2, epochs=2, seed=0, placement=resolve_placement("cpu", "bf16"))
    fp32 = train_run(cw.bn_dropout, ADAM, 1e-2, epochs=2, seed=0)
    assert all(math.isfinite(v) for v in bf16.val_loss_curve) and bf16.val_loss_curve != fp32.val_loss_curve
    assert bf16.val_loss_curve[-1] == pytest.approx(fp32.val_loss_curve[-1], rel=0.1)
    # bf16 runs one model at a time even where the model could stack
    assert not can_stack(get_workload("mnist1d-mlp"), ADAM, Placement("cpu", "bf16"))


def test_fp16_with_a_grad_scaler_on_cpu_trains():
    run = train_run(cw.bn_dropout, ADAM, 1e-2, epochs=1, seed=0, placement=Placement("cpu", "fp16"))
    assert all(math.isfinite(v) for v in run.val_loss_curve)
    with pytest.raises(ValueError, match="fp16"):
        train_run(cw.bn_dropout, get_arm("adahessian"), 1e-2, epochs=1, seed=0, placement=Placement("cpu", "fp16"))


def test_devices_auto_and_cpu_are_todays_training_and_a_missing_device_is_refused():
    assert resolve_placement("auto") == Placement("cpu") or torch.cuda.is_available()
    assert resolve_placement("cpu").default
    work = get_workload("digits-softmax")
    today = train_run(work, ADAM, 1e-2, epochs=2, seed=0)
    explicit = train_run(work, ADAM, 1e-2, epochs=2, seed=0, placement=resolve_placement("cpu"))
    assert today.val_loss_curve == explicit.val_loss_curve
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^device 'cuda' is not available: torch.cuda.is_available\(\) is False"):
            resolve_placement("cuda")
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"):
        resolve_placement("tpu")
