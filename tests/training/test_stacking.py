"""The stacking probe: which optimizers may update K stacked models, and slicing their state."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hessian_lr.arms import Arm, GraphStep, get_arm
from hessian_lr.training import stacking
from hessian_lr.training.stacking import Stacking, compact_optimizer, drop_parameters, hyperparameter_key, stacking_of

# mnist1d-mlp's parameter shapes, scaled down (a probe is a few steps of the arm's optimizer on them)
SHAPES = [(12, 6), (12,), (4, 12), (4,)]


def torch_arm(name, cls, **fixed):
    return Arm(f"probe-{name}", lambda params, **hp: cls(params, **{**fixed, **hp}))


@pytest.mark.parametrize("arm", [
    torch_arm("adam", torch.optim.Adam), torch_arm("adam-l2", torch.optim.Adam, weight_decay=1e-2),
    torch_arm("sgd", torch.optim.SGD, momentum=0.9), torch_arm("sgd-nesterov", torch.optim.SGD, momentum=0.9,
                                                              nesterov=True),
    torch_arm("adamw", torch.optim.AdamW), get_arm("adam"), get_arm("adamw"), get_arm("sgd"),
    get_arm("hessian-adam"), get_arm("hessian-sgd"), get_arm("adabelief"), get_arm("lion"),
], ids=lambda arm: arm.name)
def test_elementwise_optimizers_linear_in_the_lr_stack(arm):
    found = stacking_of(arm, {"lr": 1e-2}, SHAPES)
    assert found == Stacking(True, True, True, ""), found


# (stackable, poolable at per-row lrs, poolable at one lr)
NOT_STACKABLE = {
    "soap": (False, True, True),  # per-tensor preconditioners: one optimizer over separate tensors is fine
    "shampoo": (False, True, True),
    "muon": (False, True, True),  # its AdamW part's lr follows the lr (the arm keeps the package's ratio)
    "schedulefree-adamw": (False, False, True),  # lr-dependent averaging weights
    "apollo": (False, False, True),
    "kron": (False, False, False),  # random preconditioner updates: one draw per optimizer
}


@pytest.mark.parametrize("name", list(NOT_STACKABLE))
def test_whole_tensor_or_lr_dependent_optimizers_do_not_stack(name):
    found = stacking_of(get_arm(name), {"lr": 1e-2}, SHAPES)
    assert (found.stackable, found.poolable, found.poolable_at_one_lr) == NOT_STACKABLE[name], found
    assert found.reason.startswith("row "), found.reason  # the probe saw the rows differ


def test_the_probe_refuses_optimizers_coupling_rows_through_a_global_statistic():
    """A per-tensor norm (LARS-like trust ratio) mixes the stacked models."""
    class Normalised(torch.optim.SGD):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.add_(p.grad / (p.grad.norm() + 1e-12), alpha=-group["lr"])

    assert not stacking_of(Arm("probe-normalised", Normalised), {"lr": 1e-2}, SHAPES).stackable
    # ... and an lr-dependent state: momentum that accumulates lr * grad (not linear in the lr)
    class LrMomentum(torch.optim.SGD):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                    buf.mul_(0.9).add_(p.grad.clamp(-group["lr"], group["lr"]))
                    p.sub_(buf)

    assert not stacking_of(Arm("probe-lr-momentum", LrMomentum), {"lr": 1e-2}, SHAPES).stackable


def test_declared_stackability_overrides_the_probe():
    assert stacking_of(dataclasses.replace(get_arm("adam"), name="declared-no", stackable=False), {"lr": 1e-3},
                       SHAPES) == Stacking(False, False, False, "declared by the arm")
    assert stacking_of(dataclasses.replace(get_arm("muon"), name="declared-yes", stackable=True), {"lr": 1e-3},
                       SHAPES) == Stacking(True, True, True, "declared by the arm")
    assert stacking_of(get_arm("prodigy"), {"lr": 1.0}, SHAPES).reason == "declared by the arm"


def test_arms_whose_step_is_not_plain_are_not_stacked():
    for name in ("hessian-adam-hutchinson", "hessian-sgd-gauss-newton", "adahessian", "sophiah"):
        found = stacking_of(get_arm(name), {"lr": 1e-3}, SHAPES)
        assert found == Stacking(False, False, False, "its step is not a plain backward")
    adam_with_graph = Arm("probe-adam-graph", torch.optim.Adam, step=GraphStep(every=1))
    assert stacking_of(adam_with_graph, {"lr": 1e-3}, SHAPES).reason == "its step is not a plain backward"
    assert stacking_of(get_arm("adam"), {"betas": (0.9, 0.99)}, SHAPES) == Stacking(False, False, False, "no lr")


def test_an_optimizer_that_fails_on_stacked_rows_is_not_stackable():
    def refuses_stacks(params, lr):
        params = list(params)
        if params[0].dim() > 2:
            raise RuntimeError("no 3-D tensors here")
        return torch.optim.SGD(params, lr=lr)

    found = stacking_of(Arm("probe-refuses", refuses_stacks), {"lr": 1e-2}, SHAPES)
    assert not found.stackable and found.reason == "RuntimeError: no 3-D tensors here"


def test_a_probe_leaves_torchs_global_rng_alone_and_is_cached(monkeypatch):
    draws = []

    class Noisy(torch.optim.SGD):  # draws from the global RNG in every step
        @torch.no_grad()
        def step(self, closure=None):
            draws.append(torch.rand(()).item())
            for group in self.param_groups:
                for p in group["params"]:
                    p.add_(p.grad, alpha=-group["lr"])

    arm = Arm("probe-noisy", Noisy)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = stacking_of(arm, {"lr": 1e-2}, SHAPES)
    assert draws and torch.equal(torch.get_rng_state(), before)
    calls = []
    monkeypatch.setattr(stacking, "_run_probe", lambda *a: calls.append(a) or Stacking(False, reason="rerun"))
    assert stacking_of(arm, {"lr": 1e-2}, SHAPES) is first and not calls  # cached
    assert stacking_of(arm, {"lr": 3e-2}, SHAPES).reason == "rerun"  # another lr: probed again
    assert stacking_of(arm, {"lr": 1e-2, "momentum": 0.5}, SHAPES).reason == "rerun"
    assert stacking_of(arm, {"lr": 1e-2}, SHAPES[:2]).reason == "rerun"
    assert len(calls) == 3


def test_hyperparameter_key_ignores_only_the_lr():
    assert hyperparameter_key({"lr": 1e-3, "betas": (0.9, 0.99)}) == hyperparameter_key({"betas": (0.9, 0.99),
                                                                                          "lr": 3e-2})
    assert hyperparameter_key({"lr": 1e-3}) != hyperparameter_key({"lr": 1e-3, "betas": (0.9, 0.99)})
    assert hyperparameter_key({"betas": (0.9, 0.99)}) != hyperparameter_key({"betas": [0.9, 0.99]})
    hash(hyperparameter_key({"lr": 1e-3, "betas": [0.9, 0.99]}))  # hashable even with a list value


def _stepped(optimizer_cls, rows, steps=3, seed=0, **hp):
    generator = torch.Generator().manual_seed(seed)
    leaves = [torch.randn(rows, *shape, generator=generator).requires_grad_(True) for shape in SHAPES]
    optimizer = optimizer_cls(leaves, **hp)
    grads = [[torch.randn(rows, *shape, generator=generator) for shape in SHAPES] for _ in range(steps)]
    for step in grads:
        for leaf, grad in zip(leaves, step):
            leaf.grad = grad
        optimizer.step()
    return leaves, optimizer, grads


@pytest.mark.parametrize(("cls", "hp", "keys"), [
    (torch.optim.Adam, {"lr": 1e-2, "foreach": False}, ("exp_avg", "exp_avg_sq")),
    (torch.optim.Adam, {"lr": 1e-2, "fused": True}, ("exp_avg", "exp_avg_sq")),
    (torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9}, ("momentum_buffer",)),
])
def test_compact_optimizer_keeps_exactly_the_kept_rows_state(cls, hp, keys):
    leaves, optimizer, _ = _stepped(cls, rows=4, **hp)
    keep = torch.tensor([0, 2, 3])
    before = {id(leaf): {k: v.clone() for k, v in optimizer.state[leaf].items()} for leaf in leaves}
    values = [leaf.detach().clone() for leaf in leaves]
    compact_optimizer(optimizer, leaves, keep)
    assert optimizer.param_groups[0]["params"] == leaves  # the same objects
    assert all(a is b for a, b in zip(optimizer.param_groups[0]["params"], leaves))
    for leaf, value in zip(leaves, values):
        assert leaf.shape[0] == 3 and torch.equal(leaf.detach(), value[keep]) and leaf.grad is None
        assert leaf.requires_grad and leaf.is_leaf
        state = optimizer.state[leaf]
        for key in keys:
            assert torch.equal(state[key], before[id(leaf)][key][keep])
        if "step" in state:  # a counter, not per row
            assert torch.equal(torch.as_tensor(state["step"]), torch.as_tensor(before[id(leaf)]["step"]))


def test_a_compacted_optimizer_steps_as_one_built_on_the_kept_rows():
    keep = torch.tensor([1, 3])
    full, optimizer, grads = _stepped(torch.optim.Adam, rows=4, lr=1e-2, foreach=False)
    compact_optimizer(optimizer, full, keep)
    generator = torch.Generator().manual_seed(0)
    init = [torch.randn(4, *shape, generator=generator) for shape in SHAPES]
    kept = [t[keep].clone().requires_grad_(True) for t in init]
    reference = torch.optim.Adam(kept, lr=1e-2, foreach=False)
    for step in grads:
        for leaf, grad in zip(kept, step):
            leaf.grad = grad[keep]
        reference.step()
    more = [torch.randn(2, *shape) for shape in SHAPES]
    for leaves, opt in ((full, optimizer), (kept, reference)):
        for leaf, grad in zip(leaves, more):
            leaf.grad = grad.clone()
        opt.step()
    for a, b in zip(full, kept):
        assert torch.equal(a.detach(), b.detach())


def test_drop_parameters_continues_with_the_kept_parameters_state():
    """A pooled optimizer (separate tensors, several param groups) rebuilt over a subset continues
    exactly as one that only ever had those tensors."""
    def build(params):  # matrices and vectors in two groups, as Muon's arm does
        params = list(params)
        return torch.optim.Adam([{"params": [p for p in params if p.ndim >= 2]},
                                 {"params": [p for p in params if p.ndim < 2], "lr": 3e-3}], lr=1e-2, foreach=False)

    generator = torch.Generator().manual_seed(0)
    rows = [[torch.randn(s, generator=generator).requires_grad_(True) for s in SHAPES] for _ in range(3)]
    reference_rows = [[t.detach().clone().requires_grad_(True) for t in row] for row in rows]
    pooled = build([p for row in rows for p in row])
    reference = build([p for row in (reference_rows[0], reference_rows[2]) for p in row])
    grads = [[[torch.randn(s, generator=generator) for s in SHAPES] for _ in range(3)] for _ in range(5)]
    for t, step in enumerate(grads):
        if t == 3:
            pooled = drop_parameters(pooled, [p for row in (rows[0], rows[2]) for p in row], build)
        for r, row in enumerate(rows):
            for p, g in zip(row, step[r]):
                p.grad = g.clone()
        for r in (0, 2):
            for p, g in zip(reference_rows[r], step[r]):
                p.grad = g.clone()
        pooled.step()
        reference.step()
    assert [len(g["params"]) for g in pooled.param_groups] == [4, 4]
    for r in (0, 2):
        for p, q in zip(rows[r], reference_rows[r]):
            assert torch.equal(p.detach(), q.detach())
            assert torch.equal(pooled.state[p]["exp_avg"], reference.state[q]["exp_avg"])
