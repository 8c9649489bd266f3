"""Search spaces, tuned settings and arm sources as the report reads them from results.json.

Every arm's entry in results.json (schema 2) carries its search space (``space``: name →
``{"type": "float"|"int"|"categorical"|"fixed", ...}``, names such as ``lr``, ``eps``,
``betas[1]``), its best constructor arguments (``best_params``, tuple items assembled:
``betas: [0.9, 0.99]``), its trials' points (``trials[i].params``, by space name) and where it
came from (``source``). Schema-1 files have none of these: the fallbacks here read them as the
lr-only protocol of that schema (lr log-uniform in ``[config.lr_low, config.lr_high]``, every
trial's point ``{"lr": trial.lr}``, no source).

Nothing here judges: the functions return facts (which arms tune what, how a dimension or a
value is written) that ``document.py`` lays out and ``verdicts.py`` reasons with. Arm
descriptions come from ``source`` only, never from the registry: an arm may be an import path
(``my_pkg.mod:MyOpt``) that the registry does not know.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hessian_lr.report.formatting import MISSING
from hessian_lr.results import ArmResults, Results, TrialRecord

__all__ = ["TUNED_TYPES", "arm_space", "tuned_names", "tunes_lr", "lr_arms", "number_text", "value_text",
           "dimension_text", "trial_point", "best_trial", "best_point", "point_text", "hyperparameter_names",
           "SpaceAgreement", "space_agreement", "source_of", "packages_text", "is_log", "is_categorical"]

TUNED_TYPES = ("float", "int", "categorical")  # "fixed" is passed to the optimizer, never tuned
_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?$")


def _lr_only_space(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Schema 1's protocol: the lr alone, log-uniform in the config's range."""
    return {"lr": {"type": "float", "low": float(config.get("lr_low", 1e-4)), "high": float(config.get("lr_high", 0.1)),
                   "log": True}}


def arm_space(results: Results, arm: str) -> dict[str, dict[str, Any]]:
    """The arm's search space: its own ``space``, else ``config.arm_spaces[arm]``, else (schema 1)
    the lr-only space of the config's lr range."""
    r = results.optimizers[arm]
    return dict(r.space or (results.config.get("arm_spaces") or {}).get(arm) or _lr_only_space(results.config))


def tuned_names(space: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The names the study searches (every dimension but the fixed ones), in the space's order."""
    return [name for name, spec in space.items() if spec.get("type") in TUNED_TYPES]


def tunes_lr(space: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether the space searches the lr (a float or int dimension named ``lr``): only such arms take
    part in the equal-lr ablation (``pipeline.compare.plan_final_runs``)."""
    return (space.get("lr") or {}).get("type") in ("float", "int")


def lr_arms(results: Results) -> list[str]:
    """The arms whose space tunes the lr, in the results' order."""
    return [arm for arm in results.optimizers if tunes_lr(arm_space(results, arm))]


def is_log(spec: Mapping[str, Any]) -> bool:
    """A numeric dimension searched on a log scale."""
    return spec.get("type") in ("float", "int") and bool(spec.get("log"))


def is_categorical(spec: Mapping[str, Any]) -> bool:
    return spec.get("type") == "categorical"


def number_text(x: float | int) -> str:
    """A number written short: ``1e-4``, ``1.512e-8``, ``0.00443``, ``0.9999``, ``1.0``, ``8``.

    Integers are written as they are; floats with 4 significant digits, in exponent form (without
    the padding zero of ``1e-04``) below 1e-3 and from 1e4 on, and with a decimal point otherwise.
    """
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        mantissa, exponent = f"{x:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    text = f"{x:.4g}"
    return text if any(c in text for c in ".e") else text + ".0"


def value_text(value: Any) -> str:
    """A hyperparameter value: numbers by ``number_text``, booleans ``true``/``false`` (as in TOML),
    lists ``[a, b]``, ``None`` ``—``, anything else as ``str``."""
    if value is None:
        return MISSING
    if isinstance(value, (bool, int, float)):
        return number_text(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(value)


def dimension_text(spec: Mapping[str, Any]) -> str:
    """``log-uniform [1e-4, 0.1]``, ``uniform [0.9, 0.9999]``, ``int [1, 8]``, ``int, log-uniform
    [1, 64]``, ``one of false, true``, ``fixed 1.0``."""
    kind = spec.get("type")
    if kind in ("float", "int"):
        bounds = f"[{number_text(spec['low'])}, {number_text(spec['high'])}]"
        scale = "log-uniform" if spec.get("log") else "uniform"
        return f"{scale} {bounds}" if kind == "float" else (f"int, {scale} {bounds}" if spec.get("log") else
                                                            f"int {bounds}")
    if kind == "categorical":
        return "one of " + ", ".join(value_text(c) for c in spec.get("choices") or [])
    if kind == "fixed":
        return f"fixed {value_text(spec.get('value'))}"
    return str(kind)


def trial_point(trial: TrialRecord) -> dict[str, Any]:
    """The point a trial trained, by space name (schema 1: ``{"lr": trial.lr}``)."""
    return dict(trial.params) if trial.params else ({"lr": trial.lr} if trial.lr is not None else {})


def best_trial(arm: ArmResults, study: int | None = 0) -> TrialRecord | None:
    """The trial the pipeline picked: lowest value, then lowest number, among finished trials of
    ``study`` (``None``: over every study's trials); ``None`` when every trial failed."""
    done = [t for t in arm.trials
            if t.value is not None and t.state == "COMPLETE" and (study is None or t.study == study)]
    return min(done, key=lambda t: (t.value, t.study, t.number), default=None)


def _from_params(params: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    match = _ITEM.match(name)
    if match is None or match.group(1) not in params:
        return (name in params), params.get(name)
    value = params[match.group(1)]
    if match.group(2) is None:
        return True, value
    index = int(match.group(2))
    return (True, value[index]) if isinstance(value, (list, tuple)) and index < len(value) else (False, None)


def best_point(results: Results, arm: str) -> dict[str, Any]:
    """The arm's tuned setting by space name (``betas[1]`` read from ``best_params["betas"][1]``): a
    fixed dimension gives its value; a name ``best_params`` lacks is read from the best trial."""
    r = results.optimizers[arm]
    trial = best_trial(r)
    from_trial = trial_point(trial) if trial is not None else {}
    params = r.best_params or ({"lr": r.best_lr} if r.best_lr is not None else {})
    point = {}
    for name, spec in arm_space(results, arm).items():
        if spec.get("type") == "fixed":
            point[name] = spec.get("value")
            continue
        found, value = _from_params(params, name)
        point[name] = value if found else from_trial.get(name)
    return point


def point_text(point: Mapping[str, Any], names: Sequence[str] | None = None) -> str:
    """``lr 0.00443, betas[0] 0.9359``: a setting in a sentence or a table cell (``—`` when empty)."""
    names = list(point) if names is None else names
    return ", ".join(f"{name} {value_text(point.get(name))}" for name in names) or MISSING


def hyperparameter_names(spaces: Mapping[str, Mapping[str, Any]], tuned_only: bool = False) -> list[str]:
    """The union of the spaces' names, ``lr`` first, then in order of first appearance."""
    names: list[str] = []
    for space in spaces.values():
        names += [n for n in (tuned_names(space) if tuned_only else space) if n not in names]
    return sorted(names, key=lambda n: n != "lr")  # stable: the others keep their order


@dataclass(frozen=True)
class SpaceAgreement:
    """How the arms' search spaces relate.

    ``equal``: every arm searches exactly the same space. ``shared``: names every arm searches on
    the same dimension. ``differing``: name → the arms that search it, when not every arm searches
    it the same way. ``fixed``: name → the arms for which it is fixed.
    """

    equal: bool
    shared: tuple[str, ...]
    differing: dict[str, tuple[str, ...]]
    fixed: dict[str, tuple[str, ...]]

    @property
    def text(self) -> str:
        """The Method section's sentence on the spaces."""
        if self.equal:
            return "Every arm searches the same space (below)."
        parts = [f"shared by every arm on the same range: {', '.join(f'`{n}`' for n in self.shared)}"
                 if self.shared else "no hyperparameter is searched by every arm on the same range"]
        if self.differing:
            parts.append("searched by some arms only, or on different ranges: " + "; ".join(
                f"`{n}` ({', '.join(arms)})" for n, arms in self.differing.items()))
        if self.fixed:
            parts.append("fixed: " + "; ".join(f"`{n}` ({', '.join(arms)})" for n, arms in self.fixed.items()))
        return "The arms' search spaces differ (below): " + "; ".join(parts) + "."


def space_agreement(spaces: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> SpaceAgreement:
    """Compare the arms' spaces (arm → space)."""
    arms = list(spaces)
    names = hyperparameter_names(spaces)
    equal = all(dict(spaces[a]) == dict(spaces[arms[0]]) for a in arms)
    shared, differing, fixed = [], {}, {}
    for name in names:
        tuned = [a for a in arms if name in tuned_names(spaces[a])]
        dims = {repr(sorted(spaces[a][name].items())) for a in tuned}
        if len(tuned) == len(arms) and len(dims) == 1:
            shared.append(name)
        elif tuned:
            differing[name] = tuple(tuned)
        fixed_for = [a for a in arms if (spaces[a].get(name) or {}).get("type") == "fixed"]
        if fixed_for:
            fixed[name] = tuple(fixed_for)
    return SpaceAgreement(equal=equal, shared=tuple(shared), differing=differing, fixed=fixed)


def source_of(results: Results, arm: str) -> dict[str, Any]:
    """The arm's ``source`` record (``{}`` in schema 1)."""
    return dict(results.optimizers[arm].source or {})


def packages_text(source: Mapping[str, Any]) -> str:
    """``torch 2.13.0, pytorch_optimizer 4.1.0``; a module that is no installed distribution is
    written ``my_pkg (not an installed distribution)``; ``—`` without packages."""
    parts = []
    for package, info in (source.get("packages") or {}).items():
        info = info or {}
        dist, version = info.get("distribution"), info.get("version")
        if dist is None:
            parts.append(f"{package} (not an installed distribution)")
        else:
            parts.append(f"{dist} {version}" + (f" (module {package})" if dist != package else ""))
    return ", ".join(parts) or MISSING
