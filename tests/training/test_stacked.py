"""K stacked models against one-at-a-time training: the engine must be the same training.

One-at-a-time (``train(..., batch=False)``: SingleModel, nanoGPT-style) is the reference. Batched
training agrees to float tolerance at stable lrs (batched GEMMs round differently; a per-row lr is
applied as a scaled change), row by row, whatever else is in the batch.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from hessian_lr.arms import Arm, ScheduleFreeStep, TrainStep, get_arm
from hessian_lr.training import train, train_run
from hessian_lr.training.loop import Run
from hessian_lr.training.stacked import StackedModels
from hessian_lr.workloads import get_workload

MLP = get_workload("mnist1d-mlp")
CNN = get_workload("mnist1d-cnn")
REL = 1e-4
pytestmark = pytest.mark.filterwarnings(r"ignore:Using backward\(\) with create_graph=True")


def assert_matches(batched, reference, rel=REL):
    assert (batched.lr, batched.seed, batched.epochs) == (reference.lr, reference.seed, reference.epochs)
    assert batched.hyperparameters == reference.hyperparameters
    assert batched.diverged == reference.diverged and batched.steps_per_epoch == reference.steps_per_epoch
    assert len(batched.val_loss_curve) == len(reference.val_loss_curve)
    assert len(batched.epoch_wall_s) == len(reference.epoch_wall_s)
    for b, s in zip(batched.val_loss_curve, reference.val_loss_curve):
        assert (b is None) == (s is None)
        if s is not None:
            assert b == pytest.approx(s, rel=rel)
    assert batched.val_loss == batched.val_loss_curve[-1]
    if reference.test_loss is None:
        assert batched.test_loss is None and batched.test_accuracy is None
    else:
        assert batched.test_loss == pytest.approx(reference.test_loss, rel=rel)
        assert batched.test_accuracy == pytest.approx(reference.test_accuracy, abs=2e-3)  # <= 2 of 1,000 flip


def one_at_a_time(workload, arm, runs, epochs, **kwargs):
    return train(workload, arm, runs, epochs=epochs, batch=False, **kwargs)


# Per arm: runs with different lrs, seeds repeated and different, and non-lr hyperparameters that
# differ inside one batch (so the batch holds several optimizer groups).
OTHER = {"adam": {"betas": (0.8, 0.99)}, "hessian-adam": {"curvature_beta": 0.9, "betas": (0.85, 0.995)},
         "adabelief": {"betas": (0.8, 0.99)}, "muon": {"momentum": 0.9}}


def mixed_runs(name):
    other = OTHER[name]
    return [Run({"lr": 1e-3}, 0), Run({"lr": 2e-3, **other}, 1), Run({"lr": 1.5e-3}, 0), Run({"lr": 1e-3, **other}, 2),
            Run({"lr": 5e-4}, 3), Run({"lr": 7e-4}, 4)]


@pytest.mark.parametrize("workload", [MLP, CNN], ids=["mlp", "cnn"])
@pytest.mark.parametrize("name", ["adam", "hessian-adam", "adabelief", "muon"])
def test_batched_agrees_with_one_at_a_time(name, workload):
    arm, runs = get_arm(name), mixed_runs(name)
    batched = train(workload, arm, runs, epochs=2, batch=True)
    reference = one_at_a_time(workload, arm, runs, 2)
    # results in the order of the runs given, though the engine regroups them by hyperparameters
    assert [(r.hyperparameters, r.seed) for r in batched] == [(dict(run.hyperparameters), run.seed) for run in runs]
    for b, s in zip(batched, reference):
        assert_matches(b, s)
        assert not b.diverged and b.val_loss_curve[-1] < b.val_loss_curve[0]
    assert batched[0].val_loss_curve[0] == batched[2].val_loss_curve[0]  # seed 0 twice: the same start
    assert batched[0].val_loss_curve[-1] != batched[2].val_loss_curve[-1]


def test_the_engine_shares_optimizers_where_the_probe_allows_and_gives_the_rest_their_own():
    def units(name, runs, workload=MLP):
        models = StackedModels(workload, get_arm(name), runs)
        return [(u.start, u.stop, u.kind, u.lr_scale is not None) for u in models.units], models

    grouped = [Run({"lr": 1e-3}, 0), Run({"lr": 1.5e-3}, 0), Run({"lr": 2e-3, "betas": (0.8, 0.99)}, 1),
               Run({"lr": 1e-3, "betas": (0.8, 0.99)}, 2)]
    layout, models = units("adam", grouped)
    assert layout == [(0, 2, "stacked", True), (2, 4, "stacked", True)]  # two stacked optimizers, per-row lrs
    assert models.mlp is not None  # the hand-written MLP gradients
    assert units("adam", [Run({"lr": 1e-3}, 0), Run({"lr": 1e-3}, 1)])[0] == [(0, 2, "stacked", False)]
    # Muon: one pooled optimizer over the models' separate matrices (its AdamW part's lr follows the
    # lr, so per-row lrs scale); with an AdamW lr of its own, rows at different lrs cannot share it
    assert units("muon", [Run({"lr": 1e-3}, 0), Run({"lr": 2e-3}, 1)])[0] == [(0, 2, "pooled", True)]
    assert units("muon", [Run({"lr": 1e-3}, 0), Run({"lr": 1e-3}, 1)])[0] == [(0, 2, "pooled", False)]
    fixed_adamw = [Run({"lr": 1e-3, "adamw_lr": 3e-4}, 0), Run({"lr": 2e-3, "adamw_lr": 3e-4}, 1)]
    assert units("muon", fixed_adamw)[0] == [(0, 1, "model", False), (1, 2, "model", False)]
    assert units("soap", [Run({"lr": 1e-3}, 0), Run({"lr": 2e-3}, 1)])[0] == [(0, 2, "pooled", True)]
    assert units("prodigy", [Run({"lr": 1.0}, 0), Run({"lr": 1.0}, 1)])[0] == [(0, 1, "model", False),
                                                                              (1, 2, "model", False)]
    assert units("kron", [Run({"lr": 1e-3}, 0), Run({"lr": 1e-3}, 1)])[0] == [(0, 1, "model", False),
                                                                             (1, 2, "model", False)]
    cnn_layout, cnn = units("adam", grouped[:2], CNN)
    assert cnn_layout == [(0, 2, "stacked", True)] and cnn.mlp is None  # a batched forward and autograd
    with pytest.raises(ValueError, match="does not stack"):
        StackedModels(MLP, get_arm("hessian-adam-hutchinson"), grouped[:2])


def test_per_row_lrs_are_honoured():
    arm = get_arm("hessian-adam")
    both = train(MLP, arm, [Run({"lr": 1e-3}, 0), Run({"lr": 3e-3}, 0)], epochs=2)
    assert both[0].val_loss_curve[0] == both[1].val_loss_curve[0]  # same seed: same start
    assert both[0].val_loss_curve[-1] != pytest.approx(both[1].val_loss_curve[-1], rel=1e-3)
    for result, lr in zip(both, (1e-3, 3e-3)):
        alone = train_run(MLP, arm, lr, epochs=2, seed=0)
        assert result.lr == lr
        assert_matches(result, alone, rel=1e-5)


def test_a_diverging_row_is_marked_and_leaves_the_others_alone():
    arm = get_arm("adam")
    runs = [Run({"lr": 1e-3}, 0), Run({"lr": 1e30}, 1), Run({"lr": 2e-3}, 2)]
    counted = []
    with_bad = train(MLP, arm, runs, epochs=3, progress=counted.append)
    without = train(MLP, arm, [runs[0], runs[2]], epochs=3)
    bad = with_bad[1]
    assert bad.diverged and bad.val_loss is None and bad.test_loss is None and bad.test_accuracy is None
    assert len(bad.val_loss_curve) == 2 and bad.val_loss_curve[-1] is None and len(bad.epoch_wall_s) == 1
    assert_matches(bad, train_run(MLP, arm, 1e30, epochs=3, seed=1))  # diverges in the same epoch alone
    for b, clean in zip((with_bad[0], with_bad[2]), without):
        assert not b.diverged and all(v is not None and math.isfinite(v) for v in b.val_loss_curve)
        assert b.val_loss_curve == pytest.approx(clean.val_loss_curve, rel=1e-6)
        assert b.test_loss == pytest.approx(clean.test_loss, rel=1e-6)
    assert counted == [3 + 2, 2, 2]  # the dropped row's two untrained epochs count at once: 3 models x 3 epochs


def test_a_diverging_row_of_per_model_optimizers_leaves_the_others_alone():
    arm = get_arm("muon")
    runs = [Run({"lr": 1e-3}, 0), Run({"lr": 1e30, "adamw_lr": 1e30}, 1), Run({"lr": 2e-3}, 2)]
    with_bad = train(MLP, arm, runs, epochs=2)
    without = train(MLP, arm, [runs[0], runs[2]], epochs=2)
    assert with_bad[1].diverged and with_bad[1].val_loss_curve[-1] is None
    for b, clean in zip((with_bad[0], with_bad[2]), without):
        assert b.val_loss_curve == clean.val_loss_curve and b.test_loss == clean.test_loss


def test_a_diverging_row_among_per_model_optimizers_on_the_generic_path():
    """The CNN's gradients come from autograd (no hand-written backward): the non-finite check
    then reads each optimizer's own gradients."""
    arm = get_arm("muon")
    runs = [Run({"lr": 1e-3}, 0), Run({"lr": 1e30, "adamw_lr": 1e30}, 1), Run({"lr": 1e-3, "momentum": 0.9}, 1),
            Run({"lr": 1e-3}, 2)]
    grouped = [runs[0], runs[3], runs[1], runs[2]]  # as train() orders them: equal non-lr hyperparameters together
    assert [u.kind for u in StackedModels(CNN, arm, grouped).units] == ["pooled", "model", "model"]
    with_bad = train(CNN, arm, runs, epochs=2)
    without = train(CNN, arm, [runs[0], runs[2], runs[3]], epochs=2)
    assert with_bad[1].diverged and with_bad[1].val_loss_curve[-1] is None and len(with_bad[1].val_loss_curve) == 2
    for b, clean in zip((with_bad[0], with_bad[2], with_bad[3]), without):
        assert not b.diverged and b.val_loss_curve == pytest.approx(clean.val_loss_curve, rel=1e-6)


class _NaNForLr(TrainStep):
    """A NaN in every gradient at step 5 of the optimizer whose lr is ``lr``."""

    plain = False

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def backward(self, optimizer, loss, *, logits, step):
        loss.backward()
        if step == 5 and optimizer.param_groups[0]["lr"] == self.lr:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad.fill_(float("nan"))


def test_a_non_finite_gradient_ends_a_run_on_both_paths_even_if_its_optimizer_would_skip_it():
    """HessianLRAdaptation(nonfinite="skip") would skip the step and go on; the engine stops a
    row with an inf/NaN gradient whatever its optimizer does (one optimizer may step many rows),
    and the reference does the same."""
    from hessian_lr.optim import HessianLRAdaptation

    def build(params, **hyperparameters):
        return HessianLRAdaptation(torch.optim.Adam(params, **hyperparameters), nonfinite="skip")

    arm = Arm("hessian-adam-skip", build, step=_NaNForLr(1e-3))
    runs = [Run({"lr": 1e-3}, 0), Run({"lr": 2e-3, "betas": (0.8, 0.99)}, 1)]
    batched, reference = train(MLP, arm, runs, epochs=2), one_at_a_time(MLP, arm, runs, 2)
    assert batched[0].diverged and batched[0].val_loss_curve[1:] == [None]
    assert not batched[1].diverged
    for b, s in zip(batched, reference):
        assert_matches(b, s, rel=1e-5)


class NaNGradient(TrainStep):
    """A plain backward, then a NaN in row ``row`` of every gradient at optimizer step ``at``."""

    plain = False  # the engine computes gradients with autograd and calls this backward

    def __init__(self, at: int, row: int) -> None:
        self.at, self.row = at, row

    def backward(self, optimizer, loss, *, logits, step):
        loss.backward()
        if step == self.at:
            for p in optimizer.param_groups[0]["params"]:
                p.grad[self.row] = float("nan")


def _adam(params, **hyperparameters):
    return torch.optim.Adam(params, foreach=False, **hyperparameters)


def test_an_injected_nan_gradient_stops_its_row_and_the_others_keep_their_exact_numbers():
    """Row 1 of one stacked optimizer gets a NaN gradient at step 40 (epoch 2 of 35 steps): it is
    marked diverged in epoch 2, the optimizer never sees the NaN, and the other rows keep the exact
    numbers they have without it, also after the row is dropped and the state compacted."""
    poisoned = Arm("nan-at-40", _adam, step=NaNGradient(at=40, row=1), stackable=True)
    clean = Arm("nan-never", _adam, step=NaNGradient(at=-1, row=1), stackable=True)
    runs = [Run({"lr": 1e-3}, 0), Run({"lr": 1e-3}, 1), Run({"lr": 2e-3}, 2)]  # the top lr stays: same scales
    counted = []
    with_bad = train(MLP, poisoned, runs, epochs=3, progress=counted.append)
    without = train(MLP, clean, [runs[0], runs[2]], epochs=3)
    bad = with_bad[1]
    assert bad.diverged and len(bad.val_loss_curve) == 3 and bad.val_loss_curve[-1] is None
    assert bad.val_loss_curve[1] is not None and bad.test_loss is None and len(bad.epoch_wall_s) == 2
    for b, clean_run in zip((with_bad[0], with_bad[2]), without):
        assert b.val_loss_curve == clean_run.val_loss_curve  # bit for bit
        assert (b.test_loss, b.test_accuracy) == (clean_run.test_loss, clean_run.test_accuracy)
    assert counted == [3, 3 + 1, 2]  # 3 models x 3 epochs


def test_a_row_dropped_from_a_pooled_optimizer_leaves_the_others_their_exact_numbers():
    """Muon at one lr: one optimizer over the three models' separate tensors. The second model's
    weights turn NaN after step 40; it is stopped, marked diverged in epoch 2 and dropped (the
    optimizer rebuilt over the others' tensors with their state); the others keep the exact
    numbers of a pool without it."""
    base = get_arm("muon")

    def poisoned(params, **hyperparameters):
        params = list(params)
        optimizer = base.build(params, **hyperparameters)
        steps = [0]

        def after_step(*_):
            steps[0] += 1
            if steps[0] == 40 and len(params) == 3 * 6:  # the pool of three models: the second's 6 tensors
                with torch.no_grad():
                    for p in params[6:12]:
                        p.fill_(float("nan"))

        optimizer.register_step_post_hook(after_step)
        return optimizer

    runs = [Run({"lr": 2e-2}, 0), Run({"lr": 2e-2}, 1), Run({"lr": 2e-2}, 2)]
    arm = Arm("muon-poisoned", poisoned)
    assert [u.kind for u in StackedModels(MLP, arm, runs).units] == ["pooled"]
    counted = []
    with_bad = train(MLP, arm, runs, epochs=3, progress=counted.append)
    without = train(MLP, Arm("muon-clean", base.build), [runs[0], runs[2]], epochs=3)
    assert with_bad[1].diverged and len(with_bad[1].val_loss_curve) == 3 and with_bad[1].val_loss_curve[-1] is None
    for b, clean in zip((with_bad[0], with_bad[2]), without):
        assert b.val_loss_curve == clean.val_loss_curve and (b.test_loss, b.test_accuracy) == (clean.test_loss,
                                                                                             clean.test_accuracy)
    assert counted == [3, 3 + 1, 2]


def test_every_row_diverging_ends_the_training_early_and_progress_still_counts_every_epoch():
    counted = []
    results = train(MLP, get_arm("adam"), [Run({"lr": 1e30}, 0), Run({"lr": 1e31}, 1)], epochs=4,
                    progress=counted.append)
    assert all(r.diverged and r.val_loss_curve[-1] is None and len(r.val_loss_curve) == 2 for r in results)
    assert sum(counted) == 2 * 4
    counted.clear()
    train(MLP, get_arm("adam"), [Run({"lr": 1e-3}, 0), Run({"lr": 1e30}, 1)], epochs=3, batch=False,
          progress=counted.append)
    assert counted == [1, 1, 1, 3] and sum(counted) == 2 * 3  # one at a time: the diverged run's 3 at once


def test_per_model_optimizers_draw_their_own_random_numbers_as_when_trained_alone():
    """Kron updates its preconditioner at random steps, drawn from torch's global RNG: each
    per-model optimizer draws the stream its model would see when trained alone."""
    arm = get_arm("kron")
    runs = [Run({"lr": 1e-2}, 0), Run({"lr": 5e-3}, 1)]
    for b, s in zip(train(MLP, arm, runs, epochs=1), one_at_a_time(MLP, arm, runs, 1)):
        assert_matches(b, s, rel=1e-5)


class _Backward(TrainStep):
    """A plain backward on the autograd path (``plain = False``: no hand-written MLP backward),
    optionally followed by a draw from torch's global RNG — what another lane's model does between
    two steps of this one."""

    plain = False

    def __init__(self, other_lane_draws: bool) -> None:
        self.other_lane_draws = other_lane_draws

    def backward(self, optimizer, loss, *, logits, step):
        loss.backward()
        if self.other_lane_draws:
            torch.rand(8)


@pytest.mark.parametrize("runs", [[Run({"lr": 1e-2}, 0)], [Run({"lr": 1e-2}, 0), Run({"lr": 5e-3}, 1)]],
                         ids=["one model (SingleModel)", "two per-model optimizers (stacked)"])
def test_what_another_lane_draws_between_steps_does_not_move_a_models_own_stream(runs):
    """Kron draws its preconditioner's random vectors from torch's global RNG. A model's optimizer
    draws from the model's own stream (``ModelRNG``), so draws elsewhere in the process between its
    steps — another lane training its own model — leave its numbers exactly as they are."""
    kron = get_arm("kron")
    quiet, disturbed = (dataclasses.replace(kron, name=f"kron-{draws}", step=_Backward(draws)) for draws in (False, True))
    for a, b in zip(train(MLP, quiet, runs, epochs=1), train(MLP, disturbed, runs, epochs=1)):
        assert a.val_loss_curve == b.val_loss_curve and a.test_loss == b.test_loss


def test_a_models_own_stream_is_swapped_in_under_the_global_rng_lock():
    """While a model's stream is active no other thread can take the global RNG (to seed and draw
    another model's weights, or swap in its own stream), and the global state is restored after."""
    import threading

    from hessian_lr.training.loop import GLOBAL_RNG_LOCK, ModelRNG

    _, rng = ModelRNG.initial(MLP, 0)
    outer = torch.get_rng_state()
    taken = []
    with rng.active():
        first = torch.rand(3)
        other = threading.Thread(target=lambda: taken.append(GLOBAL_RNG_LOCK.acquire(blocking=False)))
        other.start()
        other.join()
    assert taken == [False]
    assert torch.equal(torch.get_rng_state(), outer)
    torch.manual_seed(0)  # the stream continues from the weights drawn right after seeding
    MLP.build_model()
    assert torch.equal(torch.rand(3), first)


@pytest.mark.parametrize(("name", "lr"), [("adahessian", 0.03), ("sophiah", 0.06)])
def test_graph_step_arms_batch_as_one_at_a_time(name, lr):
    arm = get_arm(name)
    runs = [Run({"lr": lr}, 0), Run({"lr": lr / 2}, 1), Run({"lr": lr, "betas": (0.8, 0.99)}, 0)]
    for b, s in zip(train(MLP, arm, runs, epochs=2), one_at_a_time(MLP, arm, runs, 2)):
        assert_matches(b, s, rel=1e-6)
        assert b.val_loss_curve[-1] < b.val_loss_curve[0]


def test_an_estimator_step_arm_falls_back_to_one_at_a_time():
    arm = get_arm("hessian-adam-hutchinson")
    runs = [Run({"lr": 3e-3}, 0), Run({"lr": 1e-3}, 1)]
    for b, s in zip(train(MLP, arm, runs, epochs=2), one_at_a_time(MLP, arm, runs, 2)):
        assert b.val_loss_curve == s.val_loss_curve and b.test_accuracy == s.test_accuracy  # the same path


def test_schedule_free_evaluates_in_eval_mode_and_batches_as_one_at_a_time():
    """Every loss computed without grad (validation, test) sees every schedule-free optimizer in
    eval mode; every training loss sees them in train mode."""
    built, seen, batched_now = [], [], [True]

    def recording_loss(outputs, targets):
        live = built if batched_now[0] else built[-1:]  # one at a time: the model being trained
        modes = {group["train_mode"] for optimizer in live for group in optimizer.param_groups}
        seen.append((torch.is_grad_enabled(), modes))
        return F.cross_entropy(outputs, targets)

    def build(params, **hyperparameters):
        params = list(params)
        optimizer = get_arm("schedulefree-adamw").build(params, **hyperparameters)
        if params[0].dtype == torch.float32:  # not the stacking probe's (float64) optimizers
            built.append(optimizer)
        return optimizer

    arm = Arm("recording-schedulefree", build, step=ScheduleFreeStep())
    workload = dataclasses.replace(MLP, name="mnist1d-mlp-recording", loss_fn=recording_loss)
    runs = [Run({"lr": 2.5e-3}, 0), Run({"lr": 1e-3, "betas": (0.8, 0.99)}, 1), Run({"lr": 2.5e-3}, 2)]
    for batch in (True, False):
        built.clear(), seen.clear()
        batched_now[0] = batch
        results = train(workload, arm, runs, epochs=2, batch=batch)
        assert len(built) == (2 if batch else 3)  # the two rows at one lr share a pooled optimizer
        evaluations = [modes for grad, modes in seen if not grad]
        training = [modes for grad, modes in seen if grad]
        assert len(evaluations) == (3 + 1) * (1 if batch else 3)  # epochs 0..2 and the test set
        assert evaluations and all(modes == {False} for modes in evaluations)
        assert training and all(modes == {True} for modes in training)
        if batch:
            batched = results
    for b, s in zip(batched, one_at_a_time(MLP, get_arm("schedulefree-adamw"), runs, 2)):
        assert_matches(b, s, rel=1e-5)
    # ... and the switch matters: evaluating at the training point gives other numbers
    at_y = train(MLP, Arm("schedulefree-no-switch", get_arm("schedulefree-adamw").build), runs[:1], epochs=2)[0]
    assert at_y.val_loss_curve[1] != pytest.approx(batched[0].val_loss_curve[1], rel=1e-3)


def test_same_seed_twice_gives_identical_results_and_wall_times_add_up():
    arm = get_arm("adam")
    runs = [Run({"lr": 1e-3}, 4), Run({"lr": 2e-3, "betas": (0.8, 0.99)}, 5), Run({"lr": 3e-3}, 4)]
    first, second = (train(MLP, arm, runs, epochs=3) for _ in range(2))
    for a, b in zip(first, second):
        assert a.val_loss_curve == b.val_loss_curve and (a.test_loss, a.test_accuracy) == (b.test_loss,
                                                                                          b.test_accuracy)
        assert a.steps_per_epoch == 35 and a.epochs == 3 and len(a.epoch_wall_s) == 3
        assert all(0 < x < y for x, y in zip(a.epoch_wall_s, a.epoch_wall_s[1:]))
        assert a.wall_s == a.epoch_wall_s[-1]
    assert first[0].epoch_wall_s == first[1].epoch_wall_s  # a batch's epoch time is split evenly


def test_steps_per_epoch_counts_a_last_partial_batch():
    workload = dataclasses.replace(MLP, name="mnist1d-mlp-b300", batch_size=300)
    results = train(workload, get_arm("adam"), [Run({"lr": 1e-3}, 0), Run({"lr": 2e-3}, 1)], epochs=1)
    assert [r.steps_per_epoch for r in results] == [12, 12]  # ceil(3,500 / 300)
    for b, s in zip(results, one_at_a_time(workload, get_arm("adam"), [Run({"lr": 1e-3}, 0), Run({"lr": 2e-3}, 1)],
                                           1)):
        assert_matches(b, s, rel=1e-5)


def test_the_generic_path_with_an_l2_penalty_matches_one_at_a_time():
    """The workload's L2 penalty enters training on both paths (and not the validation loss)."""
    workload = dataclasses.replace(MLP, name="mnist1d-mlp-l2", l2=1e-2)
    runs = [Run({"lr": 2e-3}, 0), Run({"lr": 1e-3, "betas": (0.8, 0.99)}, 1)]
    batched = train(workload, get_arm("adam"), runs, epochs=2)
    for b, s in zip(batched, one_at_a_time(workload, get_arm("adam"), runs, 2)):
        assert_matches(b, s, rel=1e-5)
    plain = train(MLP, get_arm("adam"), runs[:1], epochs=2)[0]
    assert plain.val_loss_curve[0] == pytest.approx(batched[0].val_loss_curve[0], rel=1e-6)
    assert plain.val_loss_curve[-1] != pytest.approx(batched[0].val_loss_curve[-1], rel=1e-4)


def test_runs_as_tuples_an_empty_list_and_no_test_set():
    assert train(MLP, get_arm("adam"), [], epochs=2) == []
    results = train(MLP, get_arm("adam"), [({"lr": 1e-3}, 0), ({"lr": 2e-3}, 1)], epochs=1, evaluate_test=False)
    assert [r.lr for r in results] == [1e-3, 2e-3] and all(r.test_loss is r.test_accuracy is None for r in results)
