"""The reports' text pinned byte for byte: compare's report and the suite report of synthetic results
rendered now must equal the files under ``golden/``, rendered once by the code before the verdicts
were split into a package (an unchanged wording or number is part of what a refactor keeps).

The figures are left out (their PNG bytes depend on matplotlib, not on the verdicts): the Markdown
names them, the HTML (one of each kind: it renders the same blocks as the Markdown) is rendered
without image bytes.

After an intended change of a report's text, rewrite the files and review their diff::

    .venv/bin/python tests/report/test_golden.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # report_synthetic, when run as a script

from report_synthetic import make_results, make_suite, make_wide_results, shift_suite  # noqa: E402

from hessian_lr.report.document import build_document  # noqa: E402
from hessian_lr.report.html import to_html  # noqa: E402
from hessian_lr.report.markdown import to_markdown  # noqa: E402
from hessian_lr.report.suite import analyse_suite, suite_document, summarize_suite  # noqa: E402
from hessian_lr.report.summary import summarize  # noqa: E402
from hessian_lr.results import Results, _json_safe  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"
FIGURES = {"curves": "curves.png", "sensitivity": "sensitivity.png", "ablation": "ablation.png",
           "budget": "budget.png"}
GOLDEN_NAMES = sorted(p.name for p in GOLDEN.glob("*"))


def _report(results: Results, runs: dict | None) -> dict[str, str]:
    """report.md and report.html (without image bytes) as ``write_report`` builds them."""
    summarize(results, runs)
    data = json.loads(json.dumps(_json_safe(results.to_dict()), allow_nan=False))
    results = summarize(Results.from_dict(data))
    blocks = build_document(results, FIGURES)
    return {"md": to_markdown(blocks, FIGURES), "html": to_html(blocks, {}, "golden")}


def _suite(suite: dict) -> dict[str, str]:
    """suite.json's computed summary (the performance profiles' numbers left out: they are not
    verdicts), suite.md and suite.html (without image bytes)."""
    summarized = json.loads(json.dumps(summarize_suite(suite), allow_nan=False))
    blocks = suite_document(analyse_suite(summarized), {"profiles": "profiles.png"})
    summary = {k: v for k, v in summarized["summary"].items() if k != "profiles"}
    return {"summary.json": json.dumps(summary, indent=1, allow_nan=False) + "\n",
            "md": to_markdown(blocks, {"profiles": "profiles.png"}), "html": to_html(blocks, {}, "golden")}


def render_all() -> dict[str, str]:
    """File name → text of every golden output, rendered by the code under test."""
    cases = {
        "compare": _report(*make_results(arms=("adam", "hessian-adam", "sgd", "hessian-sgd", "hessian-adam-secant"),
                                         k=4)),
        "compare-seed": _report(*make_results(k=1, ablation=False)),
        "compare-wide": _report(*make_wide_results(k=3, studies=2)),
        "compare-no-adam": _report(*make_results(arms=("sgd", "hessian-sgd", "adamw", "hessian-adamw"), k=3,
                                                 ablation=False)),
    }
    files = {f"{name}.report.{ext}": text for name, rendered in cases.items() for ext, text in rendered.items()
             if ext == "md" or name == "compare"}  # one HTML: it renders the same blocks
    suites = {"suite": make_suite(k=4),
              "suite-flipped": shift_suite(make_suite(k=4), "w-mlp", "hessian-adam", 0.5, range(2, 3))}
    for name, suite in suites.items():
        files.update({f"{name}.{ext}": text for ext, text in _suite(suite).items() if ext != "html" or name == "suite"})
    return files


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return render_all()


def test_every_golden_file_is_rendered(rendered):
    assert sorted(rendered) == GOLDEN_NAMES


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_reports_are_byte_identical_to_the_golden_files(rendered, name):
    assert rendered[name] == (GOLDEN / name).read_text(encoding="utf-8")


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for stale in GOLDEN.glob("*"):
        stale.unlink()
    for file_name, text in render_all().items():
        (GOLDEN / file_name).write_text(text, encoding="utf-8")
    print(f"wrote {len(list(GOLDEN.glob('*')))} files to {GOLDEN}")
