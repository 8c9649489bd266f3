"""modular-addition-transformer: the task, the model, and the measured reference accuracy."""

from __future__ import annotations

import statistics

import pytest
import torch

from hessian_lr.workloads import get_workload
from hessian_lr.workloads.plain import train_plain
from hessian_lr.workloads.transformer import MODULUS, REFERENCE_LR, modular_addition_splits


def test_the_task_is_the_addition_table_split_once():
    data = get_workload("modular-addition-transformer").data
    assert [len(t) for t in (data.x_train, data.x_val, data.x_test)] == [768, 96, 97]
    tokens = torch.cat([data.x_train, data.x_val, data.x_test]).long()
    labels = torch.cat([data.y_train, data.y_val, data.y_test])
    assert torch.equal(labels, (tokens[:, 0] + tokens[:, 1]) % MODULUS)
    assert (tokens[:, 2] == MODULUS).all()
    assert len({tuple(r) for r in tokens[:, :2].tolist()}) == MODULUS**2  # every pair exactly once
    assert torch.equal(modular_addition_splits().x_test, data.x_test)


def test_the_model_is_small_and_smooth():
    from hessian_lr.analysis.exact import is_piecewise_linear

    work = get_workload("modular-addition-transformer")
    model = work.build_model()
    assert sum(p.numel() for p in model.parameters()) == 14911
    assert not is_piecewise_linear(model) and work.curvature == "hvp"
    names = {type(m).__name__ for m in model.modules()}
    assert {"LayerNorm", "SelfAttention", "TokenPositionEmbedding"} <= names


@pytest.mark.slow
def test_reference_accuracy_over_three_seeds():
    work = get_workload("modular-addition-transformer")
    runs = [train_plain(work, REFERENCE_LR, seed=s) for s in range(3)]
    mean = statistics.mean(r.test_accuracy for r in runs)
    assert abs(mean - work.reference.value) < work.reference.tolerance, [r.test_accuracy for r in runs]
    assert all(r.val_loss[-1] < 0.5 * r.val_loss[0] for r in runs)
