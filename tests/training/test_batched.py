import dataclasses
import math

import pytest
import torch
from torch import nn

from hessian_lr.arms import ARMS, Arm, get_arm
from hessian_lr.optim import HessianLRAdaptation
from hessian_lr.training.batched import batched_spec, can_batch, train_batch
from hessian_lr.training.loop import train_run
from hessian_lr.workloads import get_workload

WORKLOAD = get_workload("mnist1d-mlp")
RUNS = [(1e-3, 0), (1.5e-3, 1), (2e-3, 0), (1.2e-3, 2)]  # different lrs, a repeated seed
REL = 1e-4


def assert_matches(batched, sequential, rel=REL):
    assert (batched.lr, batched.seed, batched.epochs) == (sequential.lr, sequential.seed, sequential.epochs)
    assert batched.diverged == sequential.diverged
    assert len(batched.val_loss_curve) == len(sequential.val_loss_curve)
    assert len(batched.epoch_wall_s) == len(sequential.epoch_wall_s)
    for b, s in zip(batched.val_loss_curve, sequential.val_loss_curve):
        assert (b is None) == (s is None)
        if s is not None:
            assert b == pytest.approx(s, rel=rel)
    assert batched.val_loss == batched.val_loss_curve[-1]
    if sequential.test_loss is None:
        assert batched.test_loss is None and batched.test_accuracy is None
    else:
        assert batched.test_loss == pytest.approx(sequential.test_loss, rel=rel)
        assert batched.test_accuracy == pytest.approx(sequential.test_accuracy, abs=2e-3)  # <= 2 of 1,000 flip


def sequential(arm_name, runs, epochs, workload=WORKLOAD):
    return [train_run(workload, get_arm(arm_name), lr, epochs=epochs, seed=seed) for lr, seed in runs]


@pytest.mark.parametrize("arm_name", ["adam", "hessian-adam"])
def test_matches_sequential_train_run(arm_name):
    assert can_batch(arm_name, WORKLOAD)
    batched = train_batch(WORKLOAD, arm_name, RUNS, epochs=3)
    for b, s in zip(batched, sequential(arm_name, RUNS, 3)):
        assert_matches(b, s)
        assert not b.diverged and b.test_loss is not None
        assert all(x <= y for x, y in zip(b.epoch_wall_s, b.epoch_wall_s[1:])) and b.wall_s >= b.epoch_wall_s[-1]


def test_initial_weights_are_those_of_train_run_bit_for_bit():
    batched = train_batch(WORKLOAD, "adam", [(1e-3, 5), (1e-3, 6)], epochs=1, evaluate_test=False)
    for b, seed in zip(batched, (5, 6)):
        s = train_run(WORKLOAD, get_arm("adam"), 1e-3, epochs=1, seed=seed, evaluate_test=False)
        assert b.val_loss_curve[0] == pytest.approx(s.val_loss_curve[0], rel=1e-6)
        assert b.test_loss is None


def test_per_model_lrs_are_honoured():
    both = train_batch(WORKLOAD, "hessian-adam", [(1e-3, 0), (3e-3, 0)], epochs=2)
    alone = train_batch(WORKLOAD, "hessian-adam", [(3e-3, 0)], epochs=2)
    assert both[0].val_loss_curve[0] == both[1].val_loss_curve[0]  # same seed: same start
    assert both[0].val_loss_curve[-1] != pytest.approx(both[1].val_loss_curve[-1], rel=1e-3)
    assert both[1].val_loss_curve == pytest.approx(alone[0].val_loss_curve, rel=1e-6)
    assert_matches(both[1], train_run(WORKLOAD, get_arm("hessian-adam"), 3e-3, epochs=2, seed=0))


@pytest.mark.parametrize("arm_name", ["adam", "hessian-adam"])
def test_a_diverging_model_is_marked_and_leaves_the_others_alone(arm_name):
    runs = [(1e-3, 0), (1e30, 1), (2e-3, 2)]
    with_bad = train_batch(WORKLOAD, arm_name, runs, epochs=3)
    without = train_batch(WORKLOAD, arm_name, [runs[0], runs[2]], epochs=3)
    bad = with_bad[1]
    assert bad.diverged and bad.val_loss is None and bad.test_loss is None and bad.test_accuracy is None
    assert bad.val_loss_curve[-1] is None and len(bad.val_loss_curve) < 4
    assert_matches(bad, train_run(WORKLOAD, get_arm(arm_name), 1e30, epochs=3, seed=1))
    for b, clean in zip((with_bad[0], with_bad[2]), without):
        assert not b.diverged and all(v is not None and math.isfinite(v) for v in b.val_loss_curve)
        assert b.val_loss_curve == pytest.approx(clean.val_loss_curve, rel=1e-6)
        assert b.test_loss == pytest.approx(clean.test_loss, rel=1e-6)


def test_can_batch_is_false_for_unknown_or_unreproducible_arms(monkeypatch):
    assert can_batch("adam") and can_batch("hessian-adam")
    assert not can_batch("no-such-arm")
    monkeypatch.setitem(ARMS, "adam-amsgrad", Arm("adam-amsgrad", "", lambda p, lr: torch.optim.Adam(p, lr, amsgrad=True)))
    monkeypatch.setitem(ARMS, "rmsprop", Arm("rmsprop", "", lambda p, lr: torch.optim.RMSprop(p, lr)))
    monkeypatch.setitem(ARMS, "hessian-skip", Arm(
        "hessian-skip", "", lambda p, lr: HessianLRAdaptation(torch.optim.Adam(p, lr), nonfinite="skip")))
    for name in ("adam-amsgrad", "rmsprop", "hessian-skip"):
        assert not can_batch(name) and batched_spec(name) is None


def test_unbatchable_arm_falls_back_to_sequential_train_run(monkeypatch):
    monkeypatch.setitem(ARMS, "rmsprop", Arm("rmsprop", "", lambda p, lr: torch.optim.RMSprop(p, lr)))
    epochs_seen = []
    batched = train_batch(WORKLOAD, "rmsprop", [(1e-3, 0), (2e-3, 1)], epochs=2, on_epoch=epochs_seen.append)
    for b, (lr, seed) in zip(batched, [(1e-3, 0), (2e-3, 1)]):
        s = train_run(WORKLOAD, get_arm("rmsprop"), lr, epochs=2, seed=seed)
        assert b.val_loss_curve == s.val_loss_curve and b.test_accuracy == s.test_accuracy
    assert epochs_seen == [1, 2]


@pytest.mark.parametrize(
    ("build", "lrs"),
    [
        (lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9), (1e-2, 3e-2)),
        (lambda p, lr: HessianLRAdaptation(torch.optim.SGD(p, lr, momentum=0.9)), (1e-4, 3e-4)),
        (lambda p, lr: torch.optim.AdamW(p, lr), (1e-3, 3e-3)),
        (lambda p, lr: HessianLRAdaptation(torch.optim.AdamW(p, lr, fused=True)), (1e-3, 2e-3)),
        (lambda p, lr: torch.optim.Adam(p, lr, weight_decay=1e-3), (1e-3, 3e-3)),
    ],
    ids=["sgd", "hessian-sgd", "adamw", "hessian-adamw", "adam-l2"],
)
def test_other_base_optimizers_match_sequential(monkeypatch, build, lrs):
    monkeypatch.setitem(ARMS, "extra", Arm("extra", "", build))
    assert can_batch("extra")
    runs = [(lrs[0], 0), (lrs[1], 1)]
    for b, s in zip(train_batch(WORKLOAD, "extra", runs, epochs=2), sequential("extra", runs, 2)):
        assert_matches(b, s)


class _TanhNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(40, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def test_generic_functional_call_path_matches_sequential():
    workload = dataclasses.replace(WORKLOAD, name="mnist1d-tanh", build_model=_TanhNet)
    assert can_batch("hessian-adam", workload)
    runs = [(2e-3, 0), (1e-3, 1)]
    epochs_seen = []
    batched = train_batch(workload, "hessian-adam", runs, epochs=2, on_epoch=epochs_seen.append)
    for b, s in zip(batched, sequential("hessian-adam", runs, 2, workload)):
        assert_matches(b, s)
    assert epochs_seen == [1, 2]


def test_empty_batch():
    assert train_batch(WORKLOAD, "adam", [], epochs=2) == []


def test_built_in_arms_batch_without_building_a_torch_optimizer():
    """Their declared update rule is used as is: no torch.optim constructor, so no ~1 s import of
    torch._dynamo (which Optimizer.__init__ triggers) in a batched worker."""
    import subprocess
    import sys

    code = ("import sys; from hessian_lr.workloads import get_workload; "
            "from hessian_lr.training.batched import train_batch; w = get_workload('mnist1d-mlp'); "
            "[train_batch(w, arm, [(1e-3, 0), (2e-3, 1)], epochs=1) for arm in ('adam', 'hessian-adam')]; "
            "print('torch._dynamo' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_flat_hessian_step_with_the_compiled_kernel_is_bit_identical_to_torch_ops():
    from hessian_lr.optim import kernel
    from hessian_lr.training.batched import _FlatOptimizer

    if kernel.load(compile=False) is None:
        pytest.skip("the compiled grad-diff kernel is not built (make install builds it)")
    torch.manual_seed(0)
    params = torch.randn(4, 300)
    grads = [torch.randn(4, 300) * 10.0 ** torch.randint(-6, 2, (4, 300)) for _ in range(5)]
    lr = torch.tensor([[1e-3], [3e-3], [1e-2], [0.1]])
    results = []
    for use_kernel in (True, False):
        optimizer = _FlatOptimizer(get_arm("hessian-adam").update_rule, params.clone())
        assert optimizer.kernel is not None  # built, so loaded
        if not use_kernel:
            optimizer.kernel = None
        p = params.clone()
        for g in grads:
            optimizer.step(p, g.clone(), lr)
        results.append((p, optimizer.state["h"], optimizer.state["prev_grad"]))
    for kernel_side, torch_side in zip(*results):
        assert torch.equal(kernel_side, torch_side)
