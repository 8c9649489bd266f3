"""Workloads: data + model + loss + default budget (AlgoPerf's split from the optimizer)."""

from hessian_lr.workloads.base import CURVATURE_ROUTES, TASKS, Metric, Reference, Workload, bits_per_token, steps_to_accuracy
from hessian_lr.workloads.data import Loaders, Splits
from hessian_lr.workloads.registry import WORKLOADS, get_workload, register

__all__ = ["Workload", "Reference", "Splits", "Loaders", "Metric", "bits_per_token", "steps_to_accuracy", "WORKLOADS", "get_workload", "register", "TASKS", "CURVATURE_ROUTES"]
