"""The suite report: compare's protocol on every workload, judged per workload and across them.

``hessian-lr suite`` runs compare for every (workload, arm) and writes ``suite.json``::

    {"schema": 1,
     "config": {"workloads": [...], "optimizers": [...], "trials", "seeds", "studies", "space", ...},
     "versions": {...},
     "workloads": {name: <that workload's results.json dict, as compare writes it>},
     "fidelity": {name: <analysis.fidelity's fidelity.json for that workload>}}   # a workload may lack one

From it (and nothing else) this module computes and writes:

- ``summarize_suite(suite)``: the suite dict with ``"summary"`` added — per workload each arm's
  final validation loss, its paired difference from the first arm (Holm over the arms), its tuned
  hyperparameters and its time to target; the win / tie / loss table; the performance profiles in
  steps and in wall seconds; the claims, questions and conclusion as data (``verdicts.py``).
- ``write_suite_report(suite, out)``: ``suite.md``, a self-contained ``suite.html`` (figures inlined)
  and ``profiles.png`` (and ``fidelity_training.png`` when estimator arms ran beside a fidelity
  study), byte-identical when rebuilt from the same suite.json.

The answers to the write-up's open questions (``verdicts.estimator_study``, ``verdicts.base_study``,
``verdicts.beats_adam``) get a section each, whatever arms the suite ran: which curvature estimator
and does fidelity predict training, which base optimizers gain from the wrapper, and whether any arm
beats a tuned Adam. A suite run with ``--question`` (``config["question"]``) says which question it
was run to answer.

Performance profiles follow AlgoPerf (Dahl et al. 2023, "Benchmarking Neural Network Training
Algorithms", arXiv:2306.07179; see ``profiles.py``): per workload the target is the median final
validation loss of the first arm's seeds at its tuned setting (``summary.summarize``), each arm's
time is its median seed's first epoch at or below the target, in steps (the epoch index × that
run's ``steps_per_epoch``) and in wall seconds (``epoch_wall_s``); a run that never reaches it
counts as not reached, never dropped, and an arm that did not run on a workload counts as not
reaching its target (as AlgoPerf counts a workload a submission cannot run). The ratio to the
fastest arm gives ``ρ_arm(τ)`` for ``τ ∈ [1, 4]`` and a score, the normalised area under it.
Hyperparameters are tuned per workload with compare's equal budget (Choi et al. 2019, "On
Empirical Comparisons of Optimizers for Deep Learning", arXiv:1910.05446: comparisons depend on
the tuning protocol), and repeated studies give the tuning spread (Sivaprasad et al. 2020).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hessian_lr.report.document import (Block, arms_source_blocks, difference_cells, reproducibility_blocks,
                                        search_space_blocks)
from hessian_lr.report.formatting import (MISSING, fmt, fmt_ci, fmt_mean_ci, fmt_median_range, fmt_p, fmt_pct,
                                          fmt_pct_signed, fmt_signed)
from hessian_lr.report.html import to_html
from hessian_lr.report.markdown import to_markdown
from hessian_lr.report.plots import fidelity_training_png, profiles_png
from hessian_lr.report.profiles import (PerformanceProfiles, aggregate_seed_times, performance_profiles,
                                        seed_times_from_results)
from hessian_lr.report.spaces import arm_space, best_point, point_text, source_of, tuned_names
from hessian_lr.report.summary import summarize
from hessian_lr.report.verdicts import (Comparison, Outcome, SuiteVerdicts, fidelity_records, final_comparisons,
                                        held, suite_verdicts, verdict_data)
from hessian_lr.results import Results, _json_safe, atomic_write_bytes, atomic_write_text

__all__ = ["SUITE_FILES", "CLOCKS", "SuiteAnalysis", "analyse_suite", "suite_summary", "summarize_suite",
           "suite_document", "write_suite_report"]

SUITE_FILES = ("suite.md", "suite.html", "profiles.png")
CLOCKS = ("steps", "wall_s")
CLOCK_WORDS = {"steps": "steps", "wall_s": "wall seconds"}
ANSWER_KEYS = ("estimator_study", "base_study", "beats_adam")  # suite questions with a section of their own
QUESTION_WORDS = {
    "estimators": "would a more accurate estimate of the Hessian diagonal give better results? (`--question "
                  "estimators`: adam and sgd, each bare and wrapped with every curvature estimator)",
    "bases": "how does the scheme do inside other base optimizers? (`--question bases`: adam, sgd, adamw, lion, "
             "adabelief and soap, each bare and wrapped with grad-diff)"}
HELD_WORDS = {Outcome.BETTER: "lower", Outcome.WORSE: "higher", Outcome.TIE: "within noise",
              Outcome.UNTESTABLE: "no test"}
RHO_AT = (1.0, 1.5, 2.0, 3.0, 4.0)  # the τ of the profile table's columns


@dataclass(frozen=True)
class SuiteAnalysis:
    """Everything the suite report shows, computed once from a suite dict.

    ``results``: workload → its summarized results; ``arms``: every arm, the suite's order (the
    first is the baseline); ``not_run``: the (workload, arm) pairs without results (counted as not
    reaching the target); ``profiles``: clock → performance profiles (a clock left out, with its
    reason in ``notes``, when some run lacks the times it needs); ``fidelity``: workload → its
    fidelity.json (``None``: not measured).
    """

    config: dict[str, Any]
    versions: dict[str, Any]
    results: dict[str, Results]
    arms: tuple[str, ...]
    not_run: tuple[tuple[str, str], ...]
    profiles: dict[str, PerformanceProfiles]
    fidelity: dict[str, dict[str, Any] | None]
    verdicts: SuiteVerdicts
    notes: tuple[str, ...] = ()

    @property
    def baseline(self) -> str:
        return self.arms[0]

    @property
    def workloads(self) -> tuple[str, ...]:
        return tuple(self.results)

    @property
    def question(self) -> str | None:
        """The question preset the suite was run with (``--question``), if any."""
        return self.config.get("question")

    def answer(self, key: str) -> Any:
        """A suite question's record (``estimator_study``, ``base_study``, ``beats_adam``), or None."""
        return self.verdicts.answers.get(key)


def _json_copy(value: Any) -> Any:
    """``value`` exactly as it reads back from a JSON file (so a rebuild from suite.json is identical)."""
    return json.loads(json.dumps(_json_safe(value), allow_nan=False))


def _seed_times(results: Mapping[str, Results], arms: Sequence[str], clock: str) -> dict[str, dict[str, list]]:
    """workload → arm → per-seed times; an arm that did not run there is one seed that never reached."""
    out = {}
    for workload, r in results.items():
        times = seed_times_from_results(r, clock)
        out[workload] = {arm: times.get(arm, [None]) for arm in arms}
    return out


def analyse_suite(suite: Mapping[str, Any]) -> SuiteAnalysis:
    """Summarize every workload and judge the suite.

    Args:
        suite: a suite.json dict (``summary``, if present, is ignored and recomputed).

    Returns:
        The ``SuiteAnalysis``.

    Raises:
        ValueError: no workloads, or workloads whose first arm differs (no common baseline).
    """
    data = _json_copy({k: v for k, v in suite.items() if k != "summary"})
    workloads = data.get("workloads") or {}
    if not workloads:
        raise ValueError("a suite needs at least one workload")
    results = {name: summarize(Results.from_dict(w)) for name, w in workloads.items()}
    named = list((data.get("config") or {}).get("optimizers") or [])
    arms = tuple(dict.fromkeys([*named, *(a for r in results.values() for a in r.optimizers)]))
    firsts = {name: next(iter(r.optimizers)) for name, r in results.items()}
    if len(set(firsts.values())) != 1 or (named and named[0] != next(iter(firsts.values()))):
        raise ValueError(f"every workload must have the suite's first optimizer as its first arm, got {firsts}")
    not_run = tuple((w, a) for w, r in results.items() for a in arms if a not in r.optimizers)
    profiles, notes = {}, []
    for clock in CLOCKS:
        try:
            profiles[clock] = performance_profiles(_seed_times(results, arms, clock), clock=clock)
        except ValueError as error:  # a run that reached the target without its wall times
            notes.append(f"No performance profile in {CLOCK_WORDS[clock]}: {error}.")
    fidelity = {name: (data.get("fidelity") or {}).get(name) or r.extra.get("fidelity") for name, r in results.items()}
    verdicts = suite_verdicts(results, profiles, fidelity)
    return SuiteAnalysis(config=data.get("config") or {}, versions=data.get("versions") or {}, results=results,
                         arms=arms, not_run=not_run, profiles=profiles, fidelity=fidelity, verdicts=verdicts,
                         notes=tuple(notes))


def _median_seed(times: Sequence[float | None]) -> float | None:
    """The median seed's time (``profiles.aggregate_seed_times``); ``None`` when it never reached."""
    value = aggregate_seed_times(times) if times else math.inf
    return value if math.isfinite(value) else None


def _times(analysis: SuiteAnalysis, workload: str) -> dict[str, dict[str, list] | None]:
    """clock → arm → per-seed times to the workload's target (``None`` for a clock without profiles)."""
    results = analysis.results[workload]
    return {clock: seed_times_from_results(results, clock) if clock in analysis.profiles else None for clock in CLOCKS}


def _tuned(results: Results, arm: str) -> dict[str, Any]:
    """The arm's tuned setting, tuned dimensions only (fixed ones left out)."""
    tuned = tuned_names(arm_space(results, arm))
    return {name: value for name, value in best_point(results, arm).items() if name in tuned}


def _arm_row(analysis: SuiteAnalysis, workload: str, arm: str) -> dict[str, Any]:
    """One arm on one workload, as the summary stores it."""
    results = analysis.results[workload]
    s = results.optimizers[arm].summary
    difference = next((c for c in final_comparisons(results) if c.arm == arm), None)
    times = {clock: None if by_arm is None else by_arm[arm] for clock, by_arm in _times(analysis, workload).items()}
    return {"n_seeds": s.get("n_seeds"), "n_diverged": s.get("n_diverged"), "val_loss_mean": s.get("val_loss_mean"),
            "val_loss_ci95": s.get("val_loss_ci95"), "test_accuracy_mean": s.get("test_accuracy_mean"),
            "difference": None if difference is None else verdict_data(difference),
            "tuned": _tuned(results, arm),
            "reached": s.get("reached_target"),
            "time_to_target": {clock: None if t is None else {"per_seed": t, "median_seed": _median_seed(t)}
                               for clock, t in times.items()}}


def suite_summary(analysis: SuiteAnalysis) -> dict[str, Any]:
    """The computed summary of a suite, JSON-ready (``summarize_suite`` stores it under ``"summary"``)."""
    verdicts = analysis.verdicts
    return _json_copy({
        "baseline": analysis.baseline, "arms": list(analysis.arms), "workloads": list(analysis.workloads),
        "not_run": [list(pair) for pair in analysis.not_run], "notes": list(analysis.notes),
        "per_workload": {w: {"target": r.extra.get("target"),
                             "arms": {arm: _arm_row(analysis, w, arm) for arm in r.optimizers}}
                         for w, r in analysis.results.items()},
        "profiles": {clock: p.to_dict() for clock, p in analysis.profiles.items()},
        "win_tie_loss": verdict_data(verdicts.win_tie_loss),
        "claims": verdict_data(verdicts.claims),
        "questions": {w: verdict_data(v.questions) for w, v in verdicts.workloads.items()},
        "standings": verdict_data(verdicts.standings),
        "question": analysis.question,
        "answers": {key: verdict_data(analysis.answer(key)) for key in ANSWER_KEYS},
        "conclusion": verdict_data(verdicts.conclusion)})


def summarize_suite(suite: Mapping[str, Any]) -> dict[str, Any]:
    """The suite dict (as suite.json reads back) with its computed ``"summary"``: what ``hessian-lr
    suite`` writes into suite.json. Recomputed from the workloads every time: idempotent."""
    return {**_json_copy({k: v for k, v in suite.items() if k != "summary"}),
            "summary": suite_summary(analyse_suite(suite))}


# -- the document ----------------------------------------------------------------------------------------

def _method(analysis: SuiteAnalysis) -> list[Block]:
    c = analysis.config
    first = analysis.results[analysis.workloads[0]]
    spaces: dict[str, dict[str, Any]] = {}  # arm → its space on the first workload that ran it
    differing = []
    for r in analysis.results.values():
        for arm in r.optimizers:
            space = arm_space(r, arm)
            if spaces.setdefault(arm, space) != space and arm not in differing:
                differing.append(arm)
    studies = c.get("studies") or first.config.get("studies") or 1
    items = [
        f"{len(analysis.workloads)} workloads ({', '.join(f'`{w}`' for w in analysis.workloads)}), "
        f"{len(analysis.arms)} arms; each workload runs compare's protocol: every arm tuned with the same budget "
        f"({c.get('trials', first.config.get('trials'))} TPE trials per study, {studies} "
        f"stud{'ies' if studies != 1 else 'y'}) on the workload's validation split, the best setting rerun with "
        f"{c.get('seeds', first.config.get('seeds'))} paired seeds.",
        f"The first optimizer named, `{analysis.baseline}`, is the baseline on every workload: differences are "
        f"arm − {analysis.baseline} in final validation loss, paired by seed, with Holm's correction over the arms "
        "of the workload.",
        "Win / tie / loss: a win when the paired 95% CI of the difference lies below 0, a loss when above, a tie "
        "when it contains 0 (untestable with one seed).",
        "Performance profiles (AlgoPerf, Dahl et al. 2023): per workload the target is the median final validation "
        f"loss of {analysis.baseline}'s seeds at its tuned setting; an arm's time is its median seed's first "
        "evaluation at or below it, in steps (epoch index × steps per epoch) and in wall seconds (training time, "
        "evaluation excluded); a seed that never reaches it counts as not reached, never dropped; the ratio to the "
        "fastest arm r gives ρ(τ) = the fraction of workloads with r ≤ τ, for τ from 1 to 4, and the score is "
        "the area under ρ over [1, 4], normalised to [0, 1].",
        "Estimator fidelity: `hessian-lr fidelity`'s Spearman and log-magnitude Pearson correlation of each "
        "curvature estimate with the exact Hessian diagonal, over training.",
    ]
    if analysis.not_run:
        items.append("Not run, counted as not reaching the target in the profiles: "
                     + ", ".join(f"{a} on {w}" for w, a in analysis.not_run) + ".")
    blocks: list[Block] = [("h", 2, "Method"), ("ul", items), ("h", 3, "Search spaces")]
    if differing:
        blocks.append(("p", f"The spaces of {', '.join(differing)} differ between workloads; each is shown as on the "
                            "first workload that ran it."))
    sources = {}
    for r in analysis.results.values():
        sources.update({a: source_of(r, a) for a in r.optimizers if a not in sources})
    ran = [a for a in analysis.arms if a in spaces]
    return (blocks + search_space_blocks({a: spaces[a] for a in ran}) + [("h", 3, "Arms")]
            + arms_source_blocks({a: sources[a] for a in ran}))


def _time_cell(times: Sequence[float | None] | None, digits: int | None) -> str:
    if times is None:
        return MISSING
    median_seed = _median_seed(times)
    if median_seed is None:
        return "not reached"
    return f"{median_seed:.{digits}f}" if digits is not None else f"{median_seed:g}"


def _workload_blocks(analysis: SuiteAnalysis, workload: str) -> list[Block]:
    results = analysis.results[workload]
    target = results.extra.get("target") or {}
    accuracy = any(r.summary.get("test_accuracy_mean") is not None for r in results.optimizers.values())
    comparisons = {c.arm: c for c in final_comparisons(results)}
    head = ["arm", "final val loss [95% CI]", f"− {analysis.baseline} [95% CI]",
            "Holm p", "verdict"] + (["test accuracy"] if accuracy else []) + [
        "tuned hyperparameters", "seeds reaching target", "steps to target", "wall s to target"]
    rows = []
    times = _times(analysis, workload)
    for arm, r in results.optimizers.items():
        s, c = r.summary, comparisons.get(arm)
        mine = {clock: None if by_arm is None else by_arm[arm] for clock, by_arm in times.items()}
        rows.append([arm, fmt_mean_ci(s.get("val_loss_mean"), s.get("val_loss_ci95")),
                     "baseline" if c is None else " ".join(difference_cells(c)[1:3]),
                     MISSING if c is None else fmt_p(c.p_holm), MISSING if c is None else c.label]
                    + ([fmt_pct(s.get("test_accuracy_mean"))] if accuracy else [])
                    + [point_text(_tuned(results, arm)), f"{s.get('reached_target', 0)} / {s.get('n_seeds', 0)}",
                       _time_cell(mine["steps"], None), _time_cell(mine["wall_s"], 2)])
    not_run = [a for w, a in analysis.not_run if w == workload]
    blocks: list[Block] = [("h", 3, workload),
                           ("p", f"Target: validation loss ≤ {fmt(target.get('value'))} "
                                 f"({target.get('rule', 'none')})."
                                 + ("" if accuracy else " No test accuracy (a regression workload).")
                                 + (f" Not run here: {', '.join(not_run)}." if not_run else "")),
                           ("table", head, rows)]
    return blocks


def _win_tie_loss(analysis: SuiteAnalysis) -> list[Block]:
    table = analysis.verdicts.win_tie_loss
    words = {Outcome.BETTER: "win", Outcome.WORSE: "loss", Outcome.TIE: "tie", Outcome.UNTESTABLE: "untestable"}
    rows = []
    for arm in table.arms:
        count = table.counts[arm]
        cells = [words[cell.outcome] if (cell := table.cell(w, arm)) else "not run" for w in table.workloads]
        rows.append([arm, *cells, str(count.wins), str(count.ties), str(count.losses), str(count.untestable),
                     f"{count.wins_after_holm} / {count.losses_after_holm}"])
    return [("h", 2, f"Win / tie / loss against {table.baseline}"),
            ("p", f"Final validation loss, arm − {table.baseline}, paired by seed: a win when the 95% CI lies below "
                  "0, a loss when above, a tie when it contains 0."),
            ("table", ["arm", *table.workloads, "wins", "ties", "losses", "untestable",
                       "wins / losses after Holm"], rows)]


def _profiles(analysis: SuiteAnalysis, figures: Mapping[str, str]) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Performance profiles")]
    for clock, p in analysis.profiles.items():
        rows = []
        for arm in p.arms:
            cells = []
            for w in p.workloads:
                time, ratio = p.times[w][arm], p.ratios[w][arm]
                cells.append("not reached" if not math.isfinite(time) else
                             f"{time:g} (×{ratio:.2f})" if clock == "steps" else f"{time:.2f} (×{ratio:.2f})")
            rows.append([arm, *cells, *(f"{p.rho_at(arm, tau):.2f}" for tau in RHO_AT), f"{p.scores[arm]:.3f}"])
        blocks += [("p", f"Time to target in {CLOCK_WORDS[clock]} (median seed; × the fastest arm on that workload), "
                         "ρ(τ) and the score:"),
                   ("table", ["arm", *p.workloads, *(f"ρ({tau:g})" for tau in RHO_AT), "score"], rows)]
    blocks += [("p", note) for note in analysis.notes]
    if "profiles" in figures:
        blocks.append(("img", "performance profiles ρ(τ) in steps and in wall seconds", "profiles"))
    return blocks


def _fidelity(analysis: SuiteAnalysis) -> list[Block]:
    rows, missing, skipped = [], [], []
    for w, fidelity in analysis.fidelity.items():
        records = fidelity_records(fidelity)
        if not records:
            missing.append(w)
        for f in records:
            rows.append([w, f.estimator, f"{f.steps[0]} → {f.steps[1]}",
                         *(MISSING if v is None else f"{v:.3f}" for v in (*f.spearman, *f.log_pearson))])
        skipped += [f"{name} on {w} ({why})" for name, why in ((fidelity or {}).get("skipped") or {}).items()]
    blocks: list[Block] = [("h", 2, "Estimator fidelity")]
    if rows:
        blocks += [("p", "Each curvature estimate against the exact Hessian diagonal at the first and the last "
                         "checkpoint of training (`hessian-lr fidelity`)."),
                   ("table", ["workload", "estimator", "steps", "Spearman first", "Spearman last", "log-Pearson first",
                              "log-Pearson last"], rows)]
    if skipped:
        blocks.append(("p", f"Skipped: {'; '.join(skipped)}."))
    if missing:
        blocks.append(("p", f"Not measured on: {', '.join(missing)}."))
    return blocks


def _conclusion(analysis: SuiteAnalysis) -> list[Block]:
    conclusion = analysis.verdicts.conclusion
    blocks: list[Block] = [("h", 2, "Conclusion")]
    for w, paragraphs in conclusion.per_workload.items():
        blocks += [("h", 3, w)] + [("p", text) for text in paragraphs]
    blocks += [("h", 3, "Across workloads")] + [("p", text) for text in conclusion.overall]
    for title, items in (("Statistically supported", conclusion.supported),
                         ("Not supported by these data", conclusion.not_supported),
                         ("Not tested by this suite", conclusion.not_tested)):
        blocks += [("p", f"**{title}:**"), ("ul", list(items))] if items else [("p", f"**{title}:** nothing.")]
    return blocks


def _tuning_luck(analysis: SuiteAnalysis) -> list[Block]:
    """With ``--studies K`` > 1: per workload and arm, the spread of the tuned result over the K
    independent studies and the budget curve at a few budgets (Sivaprasad et al. 2020); each
    workload's own report (``<workload>/report.md``) draws the curves in full."""
    from hessian_lr.report.budget import budget_curve, spreads_from_results, studies_from_results

    rows = []
    for workload, results in analysis.results.items():
        studies = studies_from_results(results)
        if max((len(s) for s in studies.values()), default=1) < 2:
            continue
        spreads = spreads_from_results(results)
        for arm in analysis.arms:
            if arm not in studies:
                continue
            curve = budget_curve(studies[arm], arm)
            at = "; ".join(f"{n}: {fmt_median_range(curve.median[i], curve.low[i], curve.high[i])}"
                           for i, n in enumerate(curve.budgets) if n in (1, 5, 10) or i == len(curve.budgets) - 1)
            spread = spreads[arm]
            rows.append([workload, arm, str(len(studies[arm])),
                         fmt_median_range(spread.best_median, spread.best_low, spread.best_high),
                         fmt_median_range(spread.final_median, spread.final_low, spread.final_high), at])
    if not rows:
        return []
    return [("h", 2, "Tuning luck"),
            ("p", "Each arm tuned in independent studies (different sampler seeds, the same budget each; the finals "
                  "of every study's best setting): median [range] over the studies of the best tuning objective, of "
                  "the final validation loss, and of the best objective after n trials (the budget curve; "
                  "Sivaprasad et al. 2020). Each workload's report draws the full curves."),
            ("table", ["workload", "arm", "studies", "best objective", "final val loss", "best after n trials"], rows)]


# -- the write-up's open questions, answered ------------------------------------------------------------

def _held_cells(c: Comparison | None) -> list[str]:
    """A question's difference as table cells: ``diff [95% CI]``, the Holm p, and ``held``'s word."""
    if c is None:
        return [MISSING, MISSING, "not computed"]
    difference = fmt_signed(c.mean_diff) + ("" if c.ci95 is None else f" {fmt_ci(c.ci95, signed=True)}")
    return [difference, fmt_p(c.p_holm), HELD_WORDS[held(c)]]


def _question_blocks(analysis: SuiteAnalysis) -> list[Block]:
    """Which question the suite was run to answer, and every computed answer in one list."""
    blocks: list[Block] = []
    if analysis.question in QUESTION_WORDS:
        blocks += [("h", 2, "Question"), ("p", f"This suite was run to answer the write-up's closing question: "
                                              f"{QUESTION_WORDS[analysis.question]}.")]
    study, bases, beats = (analysis.answer(key) for key in ANSWER_KEYS)
    answers = ([p.text for p in study.pooled] if study else []) + ([bases.texts[0]] if bases else []) + (
        [beats.text] if beats else [])
    if answers:
        blocks += [("h", 2, "Answers"), ("ul", answers)]
    return blocks


def _estimator_blocks(analysis: SuiteAnalysis, figures: Mapping[str, str]) -> list[Block]:
    from hessian_lr.report.verdicts.estimator_study import FIDELITY_DEFINITION, MIN_GROUP

    study = analysis.answer("estimator_study")
    if study is None:
        return []
    rows = []
    for c in study.cells:
        against_reference = ["grad-diff itself", MISSING, MISSING] if c.vs_reference is None else \
            _held_cells(c.vs_reference)
        rows.append([c.workload, c.base, c.estimator, fmt(c.fidelity, 3), fmt_mean_ci(c.final_loss, c.final_ci95)
                     + (f" ({c.diverged} of {c.seeds} diverged)" if c.diverged else ""),
                     *against_reference, *_held_cells(c.vs_base)])
    tallies = [[t.base, t.estimator, *(" / ".join(str(n) for n in t.counts(outcomes).values()) if outcomes else MISSING
                                       for outcomes in (t.vs_reference, t.vs_base))] for t in study.tallies]
    blocks: list[Block] = [
        ("h", 2, "Which curvature estimator?"),
        ("p", "Each estimator around each base: its arm's final validation loss (mean over seeds [95% CI]), its paired "
              "difference from the same base with grad-diff (`hessian-<base>`) and from the bare base, each family "
              "Holm-corrected on its workload; lower / higher when the 95% CI excludes 0 and the difference survives "
              f"Holm's correction, else within noise. Fidelity: {FIDELITY_DEFINITION} (— : not measured)."),
        ("table", ["workload", "base", "estimator", "fidelity", "final val loss [95% CI]", "− grad-diff [95% CI]",
                   "Holm p", "vs grad-diff", "− base [95% CI]", "Holm p", "vs base"], rows),
        ("p", "Across workloads, the number of workloads where the estimator's final loss was lower / within noise / "
              "higher / untestable:"),
        ("table", ["base", "estimator", "vs grad-diff", "vs the bare base"], tallies),
        ("p", " ".join(study.texts[:len(study.bases)])),
        ("h", 3, "Does fidelity predict training?"),
        ("p", f"Per workload and base, Spearman's ρ across the estimators between fidelity and final validation loss "
              f"(negative: the more faithful estimate trained to the lower loss; a diverged arm ranks last; at least "
              f"{MIN_GROUP} estimators with both numbers). Pooled per base and over all bases: the mean ρ over the "
              "groups, tested two-sided by permuting the estimators' losses within each workload independently (over "
              "all bases, one ordering per workload serves all its bases, which share its fidelity values); exact "
              "when the permutation distribution is small enough to enumerate, else a seeded Monte Carlo draw.")]
    group_rows = [[g.workload, g.base, str(len(g.estimators)), MISSING if g.rho is None else f"{g.rho:+.3f}",
                   ", ".join(g.left_out) or MISSING] for g in study.groups]
    blocks.append(("table", ["workload", "base", "estimators", "Spearman ρ", "trained, no fidelity"], group_rows))
    blocks += [("p", p.text) for p in study.pooled]
    if "fidelity_training" in figures:
        blocks.append(("img", "fidelity against the final validation loss's rank, one point per estimator and "
                              "workload, one panel per base", "fidelity_training"))
    return blocks


def _base_blocks(analysis: SuiteAnalysis) -> list[Block]:
    study = analysis.answer("base_study")
    if study is None:
        return []
    words = {True: "yes", False: "no", None: "not classified"}
    rows = [[c.workload, c.base, words[c.normalises], fmt(c.base_loss), *_held_cells(c.final),
             fmt_pct_signed(c.relative)]
            for t in study.tallies for c in t.cells]
    return [("h", 2, "Which base optimizers gain?"),
            ("p", "Per workload and base, hessian-<base> − <base> in final validation loss, paired by seed, "
                  "Holm-corrected over the workload's wrapped/bare pairs (lower / higher: the 95% CI excludes 0 and "
                  "the difference survives Holm's correction); relative: the mean difference over the bare base's "
                  "mean final loss. Per-coordinate normalisation: whether the base divides each coordinate by a "
                  "running scale of its own (as the arm declares it; Adam's family and sign updates do)."),
            ("table", ["workload", "base", "normalises", "base final val loss", "wrapped − base [95% CI]", "Holm p",
                       "verdict", "relative"], rows),
            *(("p", text) for text in study.texts)]


def _beats_adam_blocks(analysis: SuiteAnalysis) -> list[Block]:
    record = analysis.answer("beats_adam")
    if record is None:
        return []
    blocks: list[Block] = [("h", 2, f"Anything that beats a tuned {record.reference}?")]
    if record.arms:
        rows = [[a.arm, *(HELD_WORDS[a.outcomes[w]] if w in a.outcomes else "not run" for w in record.workloads),
                 str(len(a.wins)), str(len(a.losses))] for a in record.arms]
        blocks += [("p", f"Final validation loss, arm − {record.reference}, paired by seed, Holm-corrected over the "
                         f"arms on each workload: lower / higher when the 95% CI excludes 0 and the difference "
                         "survives Holm's correction, else within noise."),
                   ("table", ["arm", *record.workloads, "lower on", "higher on"], rows)]
    return blocks + [("p", record.text)]


def suite_document(analysis: SuiteAnalysis, figures: Mapping[str, str] | None = None) -> list[Block]:
    """The suite report's blocks (rendered by ``markdown.to_markdown`` and ``html.to_html``).

    Args:
        analysis: ``analyse_suite``'s result.
        figures: figure key → file name (``profiles``); only those figures get an image block.
    """
    figures = figures or {}
    blocks: list[Block] = [
        ("h", 1, f"hessian-lr suite: {len(analysis.workloads)} workloads × {len(analysis.arms)} arms"),
        ("p", f"Workloads: {', '.join(analysis.workloads)}. Arms: {', '.join(analysis.arms)} (baseline: "
              f"{analysis.baseline}, the first optimizer named)."),
        ("h", 2, "Hypothesis"),
        ("p", "Rescaling each gradient by 1/sqrt(running average of (g_t - g_(t-1))^2), a crude estimate of the "
              "Hessian diagonal, before the base optimizer steps makes training converge faster than the base "
              "optimizer alone, each with its own tuned hyperparameters; the original write-up found "
              "HessianLR(Adam) faster early and Adam slightly lower at the end, and asked whether better curvature "
              "estimators or other base optimizers would change that."),
    ]
    blocks += _question_blocks(analysis)
    blocks += _method(analysis)
    blocks += [("h", 2, "Results per workload")]
    for w in analysis.workloads:
        blocks += _workload_blocks(analysis, w)
    blocks += _win_tie_loss(analysis)
    blocks += _tuning_luck(analysis)
    blocks += _profiles(analysis, figures)
    blocks += _fidelity(analysis)
    blocks += _estimator_blocks(analysis, figures)
    blocks += _base_blocks(analysis)
    blocks += _beats_adam_blocks(analysis)
    blocks += _conclusion(analysis)
    blocks += reproducibility_blocks("`suite.json` (each workload's results.json and fidelity.json); rebuilding the "
                                     "report from it writes identical files", analysis.versions)
    return blocks


def write_suite_report(suite: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Write ``suite.md``, ``suite.html`` (self-contained: the figures inlined), ``profiles.png`` and, when
    the fidelity–training correlation was computed, ``fidelity_training.png``.

    Everything is computed from ``suite`` as suite.json holds it (a JSON round trip first), so
    writing again from the suite.json read back gives byte-identical files.

    Args:
        suite: a suite.json dict (with or without its ``summary``).
        out: the folder to write into (created if needed).

    Returns:
        File name → path of every file written.
    """
    out = Path(out)
    analysis = analyse_suite(suite)
    images = {}
    if analysis.profiles:
        images["profiles"] = profiles_png([analysis.profiles[c] for c in CLOCKS if c in analysis.profiles])
    study = analysis.answer("estimator_study")
    if study is not None and any(p.groups for p in study.pooled):
        images["fidelity_training"] = fidelity_training_png(
            [(f"around {p.scope}: mean ρ {p.test.statistic:+.3f}, p = {fmt_p(p.test.p_value)}", p.groups)
             for p in study.pooled if p.scope != "all" and p.groups])
    figures = {key: f"{key}.png" for key in images}
    blocks = suite_document(analysis, figures)
    written = {}
    for key, png in images.items():
        atomic_write_bytes(out / figures[key], png)
        written[figures[key]] = out / figures[key]
    for key in ("profiles", "fidelity_training"):  # a figure of an earlier report that this one lacks
        if key not in images:
            (out / f"{key}.png").unlink(missing_ok=True)
    title = f"hessian-lr suite ({', '.join(analysis.workloads)})"
    atomic_write_text(out / "suite.md", to_markdown(blocks, figures))
    atomic_write_text(out / "suite.html", to_html(blocks, images, title))
    written["suite.md"], written["suite.html"] = out / "suite.md", out / "suite.html"
    return written
