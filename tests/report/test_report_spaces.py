"""compare's report on schema-2 results: search spaces of several hyperparameters, an arm whose space
fixes the lr (prodigy), an import-path arm, repeated tuning studies; and schema-1 files still render."""

from __future__ import annotations

import json
import re

import pytest
from report_synthetic import MINE, make_results, make_wide_results, schema1_dict

from hessian_lr.report import summarize, write_report
from hessian_lr.report.spaces import (best_point, dimension_text, number_text, packages_text, space_agreement,
                                      value_text)
from hessian_lr.results import Results, write_json


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """The wide results' report, written once for the module (the tests only read it)."""
    out = tmp_path_factory.mktemp("wide")
    results, runs = make_wide_results()
    results.extra["ablation_runs"] = runs
    summarize(results)
    written = write_report(results, out)
    return results, (out / "report.md").read_text(), written


def _section(md: str, title: str) -> str:
    start = md.index(f"## {title}\n")
    end = md.find("\n## ", start + 1)
    return md[start:end if end != -1 else None]


def _row(md: str, first_cell: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


@pytest.mark.parametrize(("spec", "text"), [
    ({"type": "float", "low": 1e-4, "high": 0.1, "log": True}, "log-uniform [1e-4, 0.1]"),
    ({"type": "float", "low": 0.9, "high": 0.9999, "log": False}, "uniform [0.9, 0.9999]"),
    ({"type": "int", "low": 1, "high": 8, "log": False}, "int [1, 8]"),
    ({"type": "int", "low": 1, "high": 64, "log": True}, "int, log-uniform [1, 64]"),
    ({"type": "categorical", "choices": [False, True]}, "one of false, true"),
    ({"type": "categorical", "choices": ["a", 2, None]}, "one of a, 2, —"),
    ({"type": "fixed", "value": 1.0}, "fixed 1.0"),
])
def test_dimension_text(spec, text):
    assert dimension_text(spec) == text


def test_numbers_and_values_are_written_short():
    assert [number_text(x) for x in (1e-4, 1.5119e-8, 0.00443, 0.9999, 1.0, 8, 2.5e4, 0.0)] == [
        "1e-4", "1.512e-8", "0.00443", "0.9999", "1.0", "8", "2.5e4", "0.0"]
    assert [value_text(v) for v in (True, None, [0.9, 0.99], "x")] == ["true", "—", "[0.9, 0.99]", "x"]


def test_space_agreement():
    lr = {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}
    assert space_agreement({"a": lr, "b": dict(lr)}).equal
    wider = {"lr": {**lr["lr"], "high": 1.0}, "eps": {"type": "float", "low": 1e-9, "high": 1e-6, "log": True}}
    agreement = space_agreement({"a": lr, "b": wider, "c": {"lr": {"type": "fixed", "value": 1.0}}})
    assert not agreement.equal and agreement.shared == ()
    assert agreement.differing == {"lr": ("a", "b"), "eps": ("b",)} and agreement.fixed == {"lr": ("c",)}
    assert "`eps` (b)" in agreement.text and "fixed: `lr` (c)" in agreement.text


def test_packages_text_names_versions_and_modules_that_are_no_distribution():
    assert packages_text({"packages": {"torch": {"distribution": "torch", "version": "2.13.0"},
                                       "my_pkg": {"distribution": None, "version": None}}}) == \
        "torch 2.13.0, my_pkg (not an installed distribution)"
    assert packages_text({}) == "—"


def test_best_point_reads_tuple_items_from_best_params():
    results, _ = make_wide_results()
    point = best_point(results, "adam")
    assert point["betas[1]"] == results.optimizers["adam"].best_params["betas"][1] == 0.92
    assert best_point(results, "prodigy") == {"lr": 1.0, "d_coef": 1.0}  # the fixed lr gives its value


def test_method_prints_the_spaces_the_preset_and_where_each_arm_came_from(wide):
    results, md, _ = wide
    method = _section(md, "Method")
    assert "Only the lr is tuned" not in md and "5 trials per arm in each of 3 independent studies" in method
    assert "Search-space preset `wide`, with overrides for `my_pkg.mod:MyOpt`." in method
    assert "The baseline is the first optimizer named, `adam`" in method
    assert "The arms' search spaces differ (below)" in method and "`d_coef` (prodigy)" in method
    assert _row(method, "`adam`")[1:5] == ["log-uniform [1e-4, 0.1]", "uniform [0.9, 0.9999]",
                                           "log-uniform [1e-10, 1e-6]", "one of false, true"]
    assert _row(method, "`prodigy`")[1] == "fixed 1.0" and _row(method, f"`{MINE}`")[-1] == "int [1, 8]"
    source = _row(method.split("### Arms")[1], f"`{MINE}`")
    assert source[1:] == ["MyOpt from my_pkg (synthetic)", "plain backward", "no", f"`{MINE}`",
                          "my_pkg (not an installed distribution)"]


def test_tuned_table_shows_every_tuned_hyperparameter_and_no_lr_for_prodigy(wide):
    results, md, _ = wide
    tuned = _section(md, "Tuned learning rates and hyperparameters")
    header = tuned.splitlines()[4]
    assert header.startswith("| optimizer | best lr | original write-up | `betas[1]` | `eps` | `amsgrad` | "
                             "`curvature_beta` | `d_coef` | `k` |")
    assert _row(tuned, "adam")[:6] == ["adam", "0.00200", "0.00524", "0.92", "3.162e-9", "true"]
    assert _row(tuned, "hessian-adam")[6] == "0.96"
    prodigy = _row(tuned, "prodigy")
    assert prodigy[1:3] == ["fixed 1.0", "—"] and prodigy[7] == number_text(results.optimizers["prodigy"].best_params["d_coef"])
    assert _row(tuned, MINE)[8] == "2"
    assert "Not tuning the lr: prodigy: lr fixed 1.0, not tuned." in tuned
    assert "prodigy (1.00000)" not in md  # a fixed lr is never ordered or ablated as if it had been tuned


def test_sensitivity_has_a_row_and_a_panel_per_tuned_hyperparameter(wide):
    results, md, _ = wide
    sensitivity = _section(md, "Hyperparameter sensitivity")
    assert "Over every trial of all 3 studies" in sensitivity
    names = [(r[0], r[1]) for r in (line.strip("|").split(" | ") for line in sensitivity.splitlines()
                                    if line.startswith("| ") and "`" in line)]
    assert [(a.strip(), n.strip("` ")) for a, n in names] == [
        ("adam", "lr"), ("adam", "betas[1]"), ("adam", "eps"), ("adam", "amsgrad"), ("hessian-adam", "lr"),
        ("hessian-adam", "betas[1]"), ("hessian-adam", "eps"), ("hessian-adam", "amsgrad"),
        ("hessian-adam", "curvature_beta"), ("prodigy", "d_coef"), (MINE, "lr"), (MINE, "k")]
    s = results.extra["sensitivity"]["arms"]["adam"]["hyperparameters"]["lr"]
    assert f"| adam | `lr` | {number_text(s['best'])} | {number_text(s['near_best'][0])} – " \
           f"{number_text(s['near_best'][1])} | 6 / 15 |" in sensitivity
    assert "| adam | `amsgrad` | true | false, true | 6 / 15 | false |" in sensitivity


def test_ablation_names_who_took_part_and_that_only_the_lr_is_swapped(wide):
    results, md, _ = wide
    ablation = _section(md, "Equal-lr ablation")
    assert f"Arms taking part (their space tunes the lr): adam, hessian-adam, {MINE}." in ablation
    assert "only the lr is swapped" in ablation and "Not taking part" in ablation and "prodigy (fixed 1.0)" in ablation
    assert "| prodigy |" not in ablation and f"{MINE} (0.01000)" in ablation


def test_repeated_studies_give_the_spread_and_budget_curves(wide):
    results, md, written = wide
    studies = _section(md, "Tuning luck: repeated studies")
    assert "tuned in 3 independent studies" in studies and "](budget.png)" in studies and "budget.png" in written
    spread = _row(studies, "hessian-adam")
    assert spread[1:4] == ["1.0000, 1.0100, 1.0200", "1.0100", "1.0000 – 1.0200"]
    means = [sum(r["val_loss"] for r in s["final"]["seeds"]) / 6 for s in results.optimizers["hessian-adam"].studies]
    assert spread[4] == ", ".join(f"{m:.4f}" for m in means)
    assert "exceeds the study-to-study range" in studies  # hessian-adam's +0.058 against a 0.01 range
    assert "| adam | 1.2508 [1.2408, 1.2608] | 1.0100 [1.0000, 1.0200] |" in studies  # n = 1, n = 2


def test_wide_report_rebuilds_byte_identically(tmp_path, wide):
    results, _, written = wide
    write_json(tmp_path / "results.json", results.to_dict())
    again = tmp_path / "again"
    write_report(Results.from_dict(json.loads((tmp_path / "results.json").read_text())), again)
    for name, path in written.items():
        assert (again / name).read_bytes() == path.read_bytes(), name
    page = (again / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and not re.search(r"src=\"[a-z_]+\.png", page)


def test_a_schema_1_results_json_still_renders(tmp_path):
    results, runs = make_results()
    results.extra["ablation_runs"] = runs
    summarize(results)
    data = schema1_dict(results)
    write_json(tmp_path / "results.json", data)
    old = Results.from_dict(json.loads((tmp_path / "results.json").read_text()))
    write_report(old, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| `adam` | log-uniform [1e-4, 0.1] |" in md  # the lr-only space of the config's range
    assert "| `adam` | — | — | — | — | — |" in md  # no source recorded
    assert "| adam | `lr` | 0.002 | 0.002 – 0.0022 | 2 / 5 | 0.06 |" in md
    assert "Equal-lr ablation: every arm whose space tunes the lr (adam, hessian-adam)" in md


def test_an_arm_without_a_tuned_lr_anywhere_does_not_crash(tmp_path):
    results, _ = make_wide_results(studies=1)
    results.optimizers["prodigy"].best_lr = None  # an arm whose space has no lr at all
    results.optimizers["prodigy"].space = {"d_coef": results.optimizers["prodigy"].space["d_coef"]}
    for t in results.optimizers["prodigy"].trials:
        t.lr = None
        t.params.pop("lr")
    summarize(results)
    write_report(results, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert _row(_section(md, "Results"), "prodigy")[1] == "—" and "prodigy: no lr in its space" in md
    assert "## Tuning luck" not in md and not (tmp_path / "budget.png").exists()
