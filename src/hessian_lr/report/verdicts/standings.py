"""The arms ranked by their performance-profile score over a suite's workloads (AlgoPerf, Dahl et
al. 2023, arXiv:2306.07179; the profiles themselves are ``report.profiles``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from hessian_lr.report.profiles import PerformanceProfiles
from hessian_lr.report.verdicts.tally import SuiteEvidence, SuiteQuestion, Tally

__all__ = ["ProfileStanding", "profile_standings", "ACROSS"]


@dataclass(frozen=True)
class ProfileStanding:
    """One arm's place in the performance profiles: its score, on how many workloads it was the
    fastest (ratio 1, ties included) and on how many it reached the target at all."""

    EXPORTED: ClassVar[tuple[str, ...]] = ("text",)

    arm: str
    score: float
    fastest_on: int
    reached_on: int
    workloads: int

    @property
    def text(self) -> str:
        return (f"{self.arm}: score {self.score:.3f}, fastest on {self.fastest_on} of {self.workloads} workload(s), "
                f"reached the target on {self.reached_on}")


def profile_standings(profiles: PerformanceProfiles) -> list[ProfileStanding]:
    """The arms ranked by their performance-profile score (highest first; ties keep the arms' order).

    Args:
        profiles: ``profiles.performance_profiles``'s result.

    Returns:
        One ``ProfileStanding`` per arm.
    """
    standings = [ProfileStanding(arm=arm, score=profiles.scores[arm],
                                 fastest_on=sum(r == 1.0 for r in profiles.ratios_of(arm)),
                                 reached_on=sum(math.isfinite(r) for r in profiles.ratios_of(arm)),
                                 workloads=len(profiles.workloads)) for arm in profiles.arms]
    return sorted(standings, key=lambda s: -s.score)


def _judge(evidence: SuiteEvidence) -> dict[str, tuple[ProfileStanding, ...]]:
    """Clock → the ranked arms."""
    return {clock: tuple(profile_standings(p)) for clock, p in evidence.profiles.items()}


def _write(standings: Mapping[str, tuple[ProfileStanding, ...]], evidence: SuiteEvidence, tally: Tally) -> None:
    for clock, ranked in standings.items():
        clock_words = "steps" if clock == "steps" else "wall seconds"
        tally.overall.append(f"Performance profiles ({clock_words} to the target, "
                             "AlgoPerf's score on τ ∈ [1, 4]): " + "; ".join(s.text for s in ranked) + ".")


ACROSS = SuiteQuestion(key="standings", judge=_judge, write=_write)
