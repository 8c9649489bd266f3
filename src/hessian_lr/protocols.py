"""The comparison protocols and the write-up whose claims they reproduce, as data.

``PROTOCOLS``: the presets of ``hessian-lr compare --protocol``: ``seed`` runs one final training
per optimizer, as the original write-up did; ``full`` repeats the finals with 10 paired seeds and
adds the equal-lr ablation, so its claims can be tested statistically.

``WRITE_UP``: what the original write-up tuned and claimed: HessianLR(Adam) against Adam, the two
learning rates it found, and its directional claims about the validation-loss difference
``candidate − baseline``. Both protocols reproduce it (``REPRODUCES``); the report judges it on any
run that trained both arms (``report.verdicts.claims``), and the same rules judge any other
``WriteUp``: the arms, lrs and claims are read from this record, never written into the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PROTOCOLS", "StatedClaim", "WriteUp", "WRITE_UP", "REPRODUCES"]

PROTOCOLS: dict[str, dict[str, Any]] = {"seed": {"seeds": 1, "ablation": False},
                                        "full": {"seeds": 10, "ablation": True}}


@dataclass(frozen=True)
class StatedClaim:
    """One directional claim of a write-up about the validation loss of ``candidate − baseline``.

    ``at`` names the epoch: ``"early"`` (``summary.early_epoch`` of the run's epochs) or
    ``"final"`` (the last); ``direction`` is the sign claimed for the difference (-1: the
    candidate lower, +1: higher).
    """

    id: str  # stable across workloads and runs: "original/faster-early"
    statement: str  # the claim as the write-up put it
    at: Literal["early", "final"]
    direction: int


@dataclass(frozen=True)
class WriteUp:
    """A write-up's comparison: the two arms, the lrs it tuned them to, its claim and the claim's parts."""

    baseline: str
    candidate: str
    statement: str  # the claim in one sentence
    tuned_lr: Mapping[str, float]  # arm → the lr the write-up tuned it to (shown, never used to set anything)
    claims: tuple[StatedClaim, ...]

    @property
    def arms(self) -> tuple[str, str]:
        """``(baseline, candidate)``."""
        return self.baseline, self.candidate


WRITE_UP = WriteUp(
    baseline="adam", candidate="hessian-adam",
    statement="HessianLR(Adam) is faster early, Adam ends slightly lower",
    tuned_lr={"adam": 0.00524, "hessian-adam": 0.00271},
    claims=(StatedClaim("original/faster-early", "Faster early", "early", -1),
            StatedClaim("original/adam-lower-at-end", "Adam slightly lower at the end", "final", +1)))

# protocol → the write-up it reproduces ('seed' as the write-up ran it, 'full' with seeds and the ablation)
REPRODUCES: dict[str, WriteUp] = {"seed": WRITE_UP, "full": WRITE_UP}
