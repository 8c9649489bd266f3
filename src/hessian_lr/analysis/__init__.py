"""Experiment-side analysis of the curvature estimators: exact Hessian diagonal, fidelity study.
Submodules are imported on use (``hessian_lr.analysis.fidelity`` pulls in the
workloads and matplotlib; ``hessian_lr.analysis.exact`` needs torch only).
"""
