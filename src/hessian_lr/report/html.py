"""``report.html``: the same blocks as ``report.md``, one self-contained file (figures inlined as
base64 PNG, styles inline, no scripts, no network)."""

from __future__ import annotations

import base64
import html
import re

from hessian_lr.report.document import Block

__all__ = ["to_html"]

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0 1.2rem; font-size: 0.88rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.55rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f1f1f1; padding: 0 0.2rem; border-radius: 3px; }
img { max-width: 100%; border: 1px solid #eee; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
""".strip()


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def to_html(blocks: list[Block], images: dict[str, bytes], title: str = "hessian-lr report") -> str:
    """``images`` maps a figure key to its PNG bytes; an image block without bytes is left out."""
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>\n{STYLE}\n</style>", "</head>", "<body>"]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img" and block[2] in images:
            data = base64.b64encode(images[block[2]]).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(block[1])}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{_inline(block[1])}</figcaption></figure>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
