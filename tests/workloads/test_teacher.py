"""teacher-student: the generating process, and its Bayes risk as the reference."""

from __future__ import annotations

import math

import torch

from hessian_lr.workloads import get_workload
from hessian_lr.workloads.teacher import NOISE_STD, OUTPUTS, bayes_risk, teacher


def test_the_teacher_attains_the_bayes_risk():
    """The reference: the teacher's test MSE is σ²·χ²_{nK}/(nK); within 4 standard errors of σ²."""
    work = get_workload("teacher-student")
    ref = work.reference
    assert ref.value == bayes_risk() == NOISE_STD**2
    test_mse = float(work.loss_fn(teacher()(work.data.x_test), work.data.y_test))
    se = NOISE_STD**2 * math.sqrt(2 / work.data.y_test.numel())
    assert abs(test_mse - ref.value) < 4 * se == ref.tolerance or abs(test_mse - ref.value) < ref.tolerance
    # the same on the training rows: the noise is what is left
    train_mse = float(work.loss_fn(teacher()(work.data.x_train), work.data.y_train))
    assert abs(train_mse - ref.value) < 4 * NOISE_STD**2 * math.sqrt(2 / work.data.y_train.numel())


def test_data_are_the_generating_process_and_fixed():
    work = get_workload("teacher-student")
    data = work.data
    assert data.x_train.shape == (4000, 16) and data.y_train.shape == (4000, OUTPUTS)
    x = torch.cat([data.x_train, data.x_val, data.x_test])
    assert x.mean().abs() < 0.02 and (x.std() - 1).abs() < 0.02  # N(0, I) inputs
    signal = teacher()(x).var(0)
    assert (signal > 0.3).all()  # the teacher's outputs carry signal far above the noise (σ² = 0.01)
    assert torch.equal(teacher()(data.x_val[:3]), teacher()(data.x_val[:3]))
    assert not any(p.requires_grad for p in teacher().parameters())


def test_the_student_can_represent_the_teacher_and_is_piecewise_linear():
    from hessian_lr.analysis.exact import is_piecewise_linear

    work = get_workload("teacher-student")
    student = work.build_model()
    widths = [m.out_features for m in student if isinstance(m, torch.nn.Linear)]
    assert widths == [64, 64, OUTPUTS] and is_piecewise_linear(student)
    assert work.task == "regression" and work.curvature == "gauss-newton"
    assert sum(p.numel() for p in student.parameters()) == 5508
