"""Experiment-side analysis of the curvature estimators: exact Hessian diagonal, fidelity study,
arm factories. Submodules are imported on use (``hessian_lr.analysis.fidelity`` pulls in the
workloads and matplotlib; ``hessian_lr.analysis.exact`` and ``.arm_factories`` need torch only).
"""
