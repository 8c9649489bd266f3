"""Workloads: data + model + loss + default budget (AlgoPerf's split from the optimizer)."""

from hessian_lr.workloads.registry import WORKLOADS, Workload, get_workload

__all__ = ["Workload", "WORKLOADS", "get_workload"]
