"""``report.md``: the report's blocks (``document.py``) rendered as markdown. Nothing here judges or
computes; the verdicts come from ``verdicts``, the layout from ``document.py``."""

from __future__ import annotations

from hessian_lr.report.document import Block, build_document
from hessian_lr.report.summary import early_epoch
from hessian_lr.results import Results

__all__ = ["render_markdown", "build_document", "to_markdown", "early_epoch", "Block"]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(blocks: list[Block], figures: dict[str, str] | None = None) -> str:
    """Render blocks as markdown.

    Args:
        blocks: the report's blocks (see ``document``).
        figures: figure key → file name, for the image blocks.

    Returns:
        The markdown text.
    """
    figures = figures or {}
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += [f"{'#' * block[1]} {block[2]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            head, rows = block[1], block[2]
            lines.append("| " + " | ".join(_md_cell(h) for h in head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[1]}]({figures[block[2]]})", ""]
    return "\n".join(lines)


def render_markdown(results: Results, plot_name: str | None = "comparison.png",
                    figures: dict[str, str] | None = None) -> str:
    """``report.md``. ``figures`` maps figure keys (curves, sensitivity, ablation) to file names; without it
    the single ``plot_name`` figure (curves and sensitivity side by side) is shown under Results."""
    if figures is None:
        figures = {"curves": plot_name} if plot_name else {}
    return to_markdown(build_document(results, figures), figures)
