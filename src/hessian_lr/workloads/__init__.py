"""Workloads: data + model + loss + default budget (AlgoPerf's split from the optimizer)."""

from hessian_lr.workloads.base import CURVATURE_ROUTES, TASKS, Reference, Workload
from hessian_lr.workloads.registry import WORKLOADS, get_workload, register

__all__ = ["Workload", "Reference", "WORKLOADS", "get_workload", "register", "TASKS", "CURVATURE_ROUTES"]
