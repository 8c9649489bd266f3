"""Performance profiles and their score, as AlgoPerf computes them (numpy only, no training).

A performance profile (Dolan & Moré 2002, "Benchmarking optimization software with performance
profiles", Math. Program. 91:201–213) compares arms over a set of workloads by how much slower each
is than the fastest. AlgoPerf (Dahl et al. 2023, "Benchmarking Neural Network Training Algorithms",
arXiv:2306.07179, §4; results in Kasimbeg et al. 2024) scores training algorithms this way:

1. **Target.** Per workload, a validation target set from a strong baseline: the median, over
   repeated runs of the baseline's tuned setting, of the validation loss they reach. Here it is an
   input: ``summary.summarize`` sets it to the median final validation loss of the first arm's
   seeds (the first optimizer named) at its tuned setting (``extra["target"]``).
2. **Time to target.** Per workload and arm, the time (steps, or wall seconds) at which the
   validation loss first reaches the target. AlgoPerf repeats each tuning study and takes the
   **median over the studies** of each study's time, a study that misses counting as infinitely
   slow (``np.median`` over times with ``inf``; 5 studies in v0.5, 3 in v0.6). Here the repeats are
   the seeds of the tuned setting, aggregated by the median seed (``aggregate_seed_times``): the
   ``⌈K/2⌉``-th fastest of ``K`` seeds, a miss counting as ``inf``. For an odd ``K`` that is exactly
   AlgoPerf's median; for an even ``K`` it is the lower of the two middle seeds, so an arm reaches
   the target when at least half of its seeds do. (Averaging the two middle seeds, as ``np.median``
   does, would make the baseline miss its own target whenever its upper-middle seed ends above
   the median final loss and never dipped below it earlier: the target is set so that about half
   of its seeds reach it, and compare's full protocol runs 10 seeds.)
3. **Ratio.** ``r = time / fastest time on that workload``; the fastest arm has ``r = 1`` (two
   equally fastest arms both do); an arm that never reaches has ``r = inf``, never dropped. A
   workload that **no arm** reaches gives every arm ``r = inf``: it stays in the denominator and
   counts as missed for all (AlgoPerf divides ``inf / inf``, a NaN that is never ``≤ τ``). AlgoPerf
   also sets ``r = inf`` beyond ``4 × fastest``; on ``τ ∈ [1, 4]`` that changes nothing.
4. **Profile.** ``ρ_arm(τ) = (1 / #workloads) · #{workloads with r ≤ τ}``, a right-continuous step
   function of ``τ``, evaluated exactly (``rho``) and on a fine grid (``tau_grid``).
5. **Score.** The area under ``ρ`` over ``[1, τ_max = 4]``, normalised to ``[0, 1]``:
   ``score = (1/3) ∫_1^4 ρ(τ) dτ``. AlgoPerf integrates its grid with the trapezoid rule; the step
   function is integrated exactly here: each workload contributes ``max(0, 4 − max(r, 1)) / 3``.
   An arm fastest everywhere scores 1; one that never reaches any target scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hessian_lr.report.summary import seed_runs
from hessian_lr.results import Results
from hessian_lr.stats import time_to_target

__all__ = ["TAU_MAX", "GRID_POINTS", "PerformanceProfiles", "aggregate_seed_times", "ratios_to_fastest", "rho",
           "rho_steps", "profile_score", "tau_grid", "performance_profiles", "seed_times_from_results",
           "seed_times_from_curves"]

TAU_MAX = 4.0  # AlgoPerf integrates the profile up to τ = 4
GRID_POINTS = 301  # τ = 1.00, 1.01, ..., 4.00


def aggregate_seed_times(times: Sequence[float | None]) -> float:
    """An arm's time to target on one workload from its seeds: the median seed's, misses as ``inf``.

    The median seed of ``K`` is the ``⌈K/2⌉``-th fastest (the lower median for an even ``K``; see
    the module docstring for why).

    Args:
        times: per seed, the time at which the target was first reached; ``None`` (or ``inf``) =
            never reached.

    Returns:
        The median seed's time; ``inf`` when fewer than half of the seeds reached the target.

    Raises:
        ValueError: no seeds, or a time that is not positive (or NaN).
    """
    if not times:
        raise ValueError("no seeds: an arm needs at least one time (None = never reached)")
    values = np.sort(np.array([math.inf if t is None else float(t) for t in times]))
    if np.isnan(values).any() or (values <= 0).any():
        raise ValueError(f"times to target must be positive (None = never reached), got {list(times)}")
    return float(values[(len(values) - 1) // 2])


def ratios_to_fastest(times: Mapping[str, float]) -> dict[str, float]:
    """Each arm's time divided by the fastest arm's on one workload.

    Args:
        times: arm → its (aggregated) time; ``inf`` = not reached.

    Returns:
        arm → ratio ≥ 1 (``1`` for every arm tied with the fastest, ``inf`` for arms that did not reach
        the target, and ``inf`` for every arm when none reached it).
    """
    fastest = min(times.values())
    if not math.isfinite(fastest):
        return {arm: math.inf for arm in times}
    return {arm: t / fastest for arm, t in times.items()}


def rho(ratios: Sequence[float], tau: float) -> float:
    """The exact profile value ``ρ(τ)``: the fraction of workloads whose ratio is ``≤ τ``.

    Args:
        ratios: one arm's ratio on every workload (``inf`` = not reached).
        tau: the slowdown factor.

    Returns:
        A fraction in ``[0, 1]``.
    """
    return float(np.mean(np.asarray(ratios, dtype=float) <= tau))


def rho_steps(ratios: Sequence[float], tau_max: float = TAU_MAX) -> tuple[list[float], list[float]]:
    """The corners of the step function ``ρ`` on ``[1, tau_max]``, for drawing it exactly.

    Returns:
        ``(taus, values)``: ``ρ`` is ``values[i]`` from ``taus[i]`` up to ``taus[i + 1]`` (the last
        pair repeats the final value at ``tau_max``).
    """
    jumps = sorted({r for r in ratios if 1.0 < r <= tau_max})
    taus = [1.0, *jumps, tau_max]
    return taus, [rho(ratios, t) for t in taus]


def profile_score(ratios: Sequence[float], tau_max: float = TAU_MAX) -> float:
    """``(1 / (tau_max − 1)) ∫_1^tau_max ρ(τ) dτ``, integrated exactly.

    Args:
        ratios: one arm's ratio on every workload (``inf`` = not reached).
        tau_max: the upper end of the integral (AlgoPerf: 4).

    Returns:
        The score in ``[0, 1]``.
    """
    r = np.asarray(ratios, dtype=float)
    if r.size == 0:
        raise ValueError("a profile needs at least one workload")
    covered = np.where(np.isfinite(r), np.clip(tau_max - np.maximum(r, 1.0), 0.0, None), 0.0)
    return float(covered.sum() / (r.size * (tau_max - 1.0)))


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def tau_grid(tau_max: float = TAU_MAX, points: int = GRID_POINTS) -> np.ndarray:
    """``points`` evenly spaced values of ``τ`` from 1 to ``tau_max`` (both included)."""
    return np.linspace(1.0, tau_max, points)


@dataclass(frozen=True)
class PerformanceProfiles:
    """Profiles of every arm over the workloads, in one clock (steps or wall seconds).

    ``times[workload][arm]``: the aggregated time to target (``inf`` = not reached);
    ``ratios[workload][arm]``: the ratio to that workload's fastest arm; ``rho[arm]``: ``ρ`` on
    ``taus``; ``scores[arm]``: the normalised area under ``ρ`` on ``[1, tau_max]``.
    """

    clock: str
    arms: tuple[str, ...]
    workloads: tuple[str, ...]
    times: dict[str, dict[str, float]]
    ratios: dict[str, dict[str, float]]
    taus: tuple[float, ...]
    rho: dict[str, tuple[float, ...]]
    scores: dict[str, float]
    tau_max: float = TAU_MAX

    def ratios_of(self, arm: str) -> list[float]:
        """The arm's ratio on every workload, in ``workloads`` order."""
        return [self.ratios[w][arm] for w in self.workloads]

    def rho_at(self, arm: str, tau: float) -> float:
        """The exact ``ρ_arm(τ)`` (not read off the grid)."""
        return rho(self.ratios_of(arm), tau)

    def to_dict(self) -> dict:
        """JSON-ready: ``inf`` (not reached) written as ``None``."""
        return {"clock": self.clock, "arms": list(self.arms), "workloads": list(self.workloads),
                "tau_max": self.tau_max,
                "times": {w: {a: _finite_or_none(t) for a, t in arms.items()} for w, arms in self.times.items()},
                "ratios": {w: {a: _finite_or_none(r) for a, r in arms.items()} for w, arms in self.ratios.items()},
                "taus": list(self.taus), "rho": {a: list(v) for a, v in self.rho.items()}, "scores": dict(self.scores)}


def performance_profiles(seed_times: Mapping[str, Mapping[str, Sequence[float | None]]], clock: str = "steps",
                         tau_max: float = TAU_MAX, points: int = GRID_POINTS) -> PerformanceProfiles:
    """Performance profiles and scores from every arm's per-seed times to target on every workload.

    Args:
        seed_times: workload → arm → per-seed times to that workload's target (``None`` = never
            reached). Every workload must have the same arms; the first workload's order is kept.
        clock: what the times count (``"steps"``, ``"wall seconds"``): a label only. Call once per
            clock: profiles in steps and in wall seconds can differ.
        tau_max: the profile's right end (AlgoPerf: 4).
        points: grid size for ``rho``.

    Returns:
        The ``PerformanceProfiles``.

    Raises:
        ValueError: no workloads, workloads with different arms, or invalid times.
    """
    if not seed_times:
        raise ValueError("performance profiles need at least one workload")
    workloads = tuple(seed_times)
    arms = tuple(seed_times[workloads[0]])
    for workload in workloads:
        if set(seed_times[workload]) != set(arms):
            raise ValueError(f"every workload needs the same arms: {workload!r} has {sorted(seed_times[workload])}, "
                             f"{workloads[0]!r} has {sorted(arms)}")
    times = {w: {a: aggregate_seed_times(seed_times[w][a]) for a in arms} for w in workloads}
    ratios = {w: ratios_to_fastest(times[w]) for w in workloads}
    grid = tau_grid(tau_max, points)
    per_arm = {a: np.asarray([ratios[w][a] for w in workloads]) for a in arms}
    return PerformanceProfiles(
        clock=clock, arms=arms, workloads=workloads, times=times, ratios=ratios,
        taus=tuple(float(t) for t in grid),
        rho={a: tuple(float(v) for v in (r[None, :] <= grid[:, None]).mean(axis=1)) for a, r in per_arm.items()},
        scores={a: profile_score(r, tau_max) for a, r in per_arm.items()}, tau_max=tau_max)


def seed_times_from_results(results: Results, clock: str = "steps", steps_per_epoch: int = 1) -> dict[str, list]:
    """Every arm's per-seed times to the workload's target, from summarized results.

    The target is the one ``summary.summarize`` set (``extra["target"]``: AlgoPerf's rule, the
    median final validation loss of the baseline's seeds), and the times are those it found per
    seed (``time_to_target_epochs`` / ``_wall_s``): the validation loss is measured once per epoch.

    Args:
        results: one workload's summarized results.
        clock: ``"steps"`` (the epoch reached times that run's ``steps_per_epoch``) or ``"wall_s"``
            (cumulative training seconds at the end of that epoch, from its ``epoch_wall_s``).
        steps_per_epoch: optimizer steps per epoch for runs that do not record their own
            ``steps_per_epoch`` (schema 1); with the default 1 their times are epochs.

    Returns:
        arm → per-seed times (``None`` = never reached), for ``performance_profiles``.

    Raises:
        ValueError: an unknown clock, or a seed that reached the target without a recorded wall time.
    """
    if clock not in ("steps", "wall_s"):
        raise ValueError(f"clock must be 'steps' or 'wall_s', got {clock!r}")
    out: dict[str, list] = {}
    for arm, r in results.optimizers.items():
        epochs = r.summary.get("time_to_target_epochs") or []
        if clock == "steps":
            per_run = [run.get("steps_per_epoch") or steps_per_epoch for run in seed_runs(r.final)]
            per_run += [steps_per_epoch] * (len(epochs) - len(per_run))
            out[arm] = [None if e is None else e * spe for e, spe in zip(epochs, per_run)]
            continue
        walls = r.summary.get("time_to_target_wall_s") or [None] * len(epochs)
        if any(e is not None and w is None for e, w in zip(epochs, walls)):
            raise ValueError(f"{arm}: a seed reached the target but has no wall time (epoch_wall_s missing)")
        out[arm] = list(walls)
    return out


def seed_times_from_curves(curves: Sequence[Sequence[float | None]], target: float,
                           clocks: Sequence[Sequence[float]] | None = None) -> list[float | None]:
    """Per-seed times to ``target`` from validation curves (``stats.time_to_target``'s rule).

    Args:
        curves: per seed, the validation loss after each evaluation (index 0 = before training).
        target: the workload's target (reached when the loss is ``≤ target``).
        clocks: per seed, the clock (steps or seconds) at evaluations 1, 2, ...; without it the time
            is the evaluation's index.

    Returns:
        Per seed the time of the first evaluation at or below the target, ``None`` when never reached
        (a diverged curve, ``None`` from some point on, never reaches it afterwards).
    """
    times: list[float | None] = []
    for seed, curve in enumerate(curves):
        epoch, _ = time_to_target(curve, target)
        times.append(None if epoch is None else epoch if clocks is None else clocks[seed][epoch - 1])
    return times
