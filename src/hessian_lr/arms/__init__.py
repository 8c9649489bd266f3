"""Arms: the optimizers under test (AlgoPerf's submissions), by name or by import path.

``get_arm(name)`` resolves a registered name (``adam``, ``muon``, ...), any arm wrapped in
HessianLRAdaptation (``hessian-<arm>``, ``hessian-<arm>-<estimator>``: ``hessian-adam``,
``hessian-lion-gauss-newton``, ``hessian-my_pkg.mod:MyOpt``), an ``[arms.NAME]`` table of a
config, or an import path ``package.module:attribute`` naming an :class:`Arm` or an optimizer
factory.
"""

from hessian_lr.arms.base import (DEFAULT_SPACE, PLAIN, Arm, EstimatorStep, GraphStep, PlainStep, SampledStep,
                                  ScheduleFreeStep, TrainStep, Wrapping, check_space)
from hessian_lr.arms.baselines import BASELINE_ARMS
from hessian_lr.arms.builtin import BUILTIN_ARMS
from hessian_lr.arms.registry import ARMS, Declared, get_arm, is_import_path, parse_arm_names, provenance, register
from hessian_lr.arms.wrapping import wrap

for _arm in (*BUILTIN_ARMS, *BASELINE_ARMS):
    register(_arm)
del _arm

__all__ = ["Arm", "TrainStep", "PlainStep", "GraphStep", "EstimatorStep", "SampledStep", "ScheduleFreeStep", "PLAIN",
           "DEFAULT_SPACE", "Wrapping", "ARMS", "Declared", "get_arm", "parse_arm_names", "is_import_path",
           "provenance", "register", "check_space", "wrap"]
