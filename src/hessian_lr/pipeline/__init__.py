"""The pipelines: ``compare`` (tune -> finals -> results for one workload) and the modules it is
made of — parallel execution (processes, lanes, progress), the run store (files, locks), the
outputs. Each module has one concern; data flows one way."""

from hessian_lr.pipeline.compare import run_compare, run_worker
from hessian_lr.pipeline.execution import ProgressEvent

__all__ = ["run_compare", "run_worker", "ProgressEvent"]
