"""A run's plan in its database storage: what ``hessian-lr worker`` follows.

A ``compare`` or ``suite`` on a database storage publishes its plan in a study named after its
``--study`` prefix (the *plan study*, which has no trials; the run's own studies are named
``<study>.<workload>.<arm>...``), as user attributes:

``kind``      ``"hessian-lr plan"``
``compares``  every comparison's configuration (a dict of :class:`~hessian_lr.config.CompareConfig`),
              in the order the run does them: one for ``compare``, one per workload for ``suite``
``current``   the index of the comparison the run is doing now; workers do its trials and final
              runs, and follow the run to the next one
``done``      true once the run has written its outputs: workers exit

The same command run again publishes the plan again (``done`` false), so workers that are still
waiting go on with it. One run per study name at a time: a second run under the same name
replaces the plan of the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage

__all__ = ["Plan", "publish_plan", "set_current", "mark_done", "read_plan", "PLAN_KIND"]

PLAN_KIND = "hessian-lr plan"


@dataclass(frozen=True)
class Plan:
    """What a worker reads: the comparisons, the one being done now, and whether the run is done."""

    compares: list[dict[str, Any]]
    current: int
    done: bool


def _study(storage: BaseStorage | str, name: str) -> optuna.Study:
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)


def publish_plan(storage: BaseStorage | str, name: str, compares: Sequence[Mapping[str, Any]]) -> optuna.Study:
    """Write the plan of a run that starts (or starts again); returns the plan study."""
    study = _study(storage, name)
    study.set_user_attr("kind", PLAN_KIND)
    study.set_user_attr("compares", [dict(c) for c in compares])
    study.set_user_attr("current", 0)
    study.set_user_attr("done", False)
    return study


def set_current(plan_study: optuna.Study, index: int) -> None:
    """The run goes on to comparison ``index``."""
    plan_study.set_user_attr("current", index)


def mark_done(plan_study: optuna.Study) -> None:
    """The run has finished: its workers exit."""
    plan_study.set_user_attr("done", True)


def read_plan(storage: BaseStorage | str, name: str) -> Plan | None:
    """The plan published under ``name``, or None if there is none."""
    try:
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
    except KeyError:  # no such study
        return None
    if attrs.get("kind") != PLAN_KIND:
        return None
    return Plan(list(attrs.get("compares") or []), int(attrs.get("current", 0)), bool(attrs.get("done")))
