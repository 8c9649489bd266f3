"""Reports: read results, never train. Every number and comparative sentence is computed."""

from hessian_lr.report.markdown import render_markdown
from hessian_lr.report.plots import save_comparison_plot

__all__ = ["render_markdown", "save_comparison_plot"]
