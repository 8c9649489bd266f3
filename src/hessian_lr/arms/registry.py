"""Arm names -> arms: the built-in registry and arms imported by path.

``get_arm("adam")`` returns a registered arm; ``get_arm("my_pkg.my_module:my_arm")`` imports
``my_pkg.my_module`` (the current directory is searched too, as ``python -m`` would) and takes
its attribute ``my_arm``, which is either

* an :class:`~hessian_lr.arms.base.Arm` (it keeps its own step, space and defaults), or
* a plain factory ``(params, lr, **hyperparameters) -> torch.optim.Optimizer`` — a function or
  an optimizer class such as ``torch.optim:RMSprop``; it gets the default space (the lr), a plain
  training step, and its signature's keyword defaults as its ``defaults``.

Either way the arm's name is the path as given, and results.json records where it came from
(:func:`provenance`).

Any arm is wrapped in HessianLRAdaptation by name, ``hessian-<arm>`` or
``hessian-<arm>-<estimator>`` (the grammar: :mod:`hessian_lr.arms.names`; the arm:
:mod:`hessian_lr.arms.wrapping`), and a run may declare arms of its own by ``[arms.NAME]``
tables (passed to :func:`get_arm` as ``declared``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import lru_cache
from typing import Any

from hessian_lr.arms.base import Arm, signature_defaults
from hessian_lr.arms.names import estimator_names, parse_wrapped, wrapped_name
from hessian_lr.imports import import_object, is_import_path, module_of, package_versions

__all__ = ["ARMS", "register", "get_arm", "parse_arm_names", "is_import_path", "provenance", "Declared"]

ARMS: dict[str, Arm] = {}
# ``[arms.NAME]`` tables by name (:func:`hessian_lr.arms.wrapping.check_table`).
Declared = Mapping[str, Mapping[str, Any]]


def register(arm: Arm) -> Arm:
    if arm.name in ARMS:
        raise ValueError(f"an arm named {arm.name!r} is already registered")
    ARMS[arm.name] = arm
    return arm


@lru_cache(maxsize=None)
def _arm_from_path(path: str) -> Arm:
    target = import_object(path, "optimizer")
    if isinstance(target, Arm):
        return replace(target, name=path, source=path)
    if not callable(target):
        raise ValueError(f"optimizer {path!r} is a {type(target).__name__}, not an Arm or an optimizer factory "
                         "(params, lr, **hyperparameters) -> torch.optim.Optimizer")
    package = module_of(path).split(".")[0]
    doc = (getattr(target, "__doc__", None) or "").strip().splitlines()
    return Arm(path, target, description=f"{path} (imported){': ' + doc[0] if doc else ''}",
               defaults=signature_defaults(target), source=path,
               requires=(package,) if package not in ("torch", "__main__") else ("torch",))


@lru_cache(maxsize=None)
def _wrapped_arm(name: str) -> Arm:
    """The arm ``hessian-<base>[-<estimator>]`` (one object per name: the stacking probe's
    cache is keyed by the arm's ``build``)."""
    from hessian_lr.arms.wrapping import wrap

    parsed = parse_wrapped(name)
    assert parsed is not None
    if name != wrapped_name(parsed.base, parsed.estimator):
        raise ValueError(f"optimizer {name!r}: {parsed.estimator} is the default estimator; name it "
                         f"{wrapped_name(parsed.base)!r}")
    if parse_wrapped(parsed.base) is not None:
        raise ValueError(f"optimizer {name!r}: {parsed.base} is already wrapped in HessianLRAdaptation; an arm is "
                         "wrapped once")
    if parsed.base not in ARMS and not is_import_path(parsed.base):
        raise ValueError(f"unknown optimizer {name!r}: {parsed.base!r} is not an arm, and what follows "
                         f"'hessian-<arm>-' must be an estimator ({', '.join(estimator_names())}); arms: "
                         f"{', '.join(ARMS)}, or an import path 'package.module:name'")
    return wrap(get_arm(parsed.base), parsed.estimator)


@lru_cache(maxsize=None)
def _declared_arm(name: str, table_json: str) -> Arm:
    from hessian_lr.arms.wrapping import declared_arm

    table = json.loads(table_json)
    return declared_arm(name, table, get_arm(table["base"]))


def get_arm(name: str, declared: Declared | None = None) -> Arm:
    """The arm called ``name``, in this order: a registered name; an ``[arms.NAME]`` table of
    ``declared``; ``hessian-<arm>[-<estimator>]``, any arm wrapped in HessianLRAdaptation; an
    import path ``module:attribute``. Equal names give the same object.

    Args:
        name: the arm's name.
        declared: ``[arms.NAME]`` tables by name (validated or not).

    Raises:
        ValueError: an unknown name, an arm that cannot be wrapped (one line naming why), or an
            import path that cannot be imported or names something that is neither an arm nor a
            factory.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an optimizer name must be a non-empty string, got {name!r}")
    if name in ARMS:
        return ARMS[name]
    if declared and name in declared:
        from hessian_lr.arms.wrapping import check_table

        table = check_table(name, declared[name])
        if table["base"] in declared:
            raise ValueError(f"arms.{name}: its base {table['base']} is declared by [arms.{table['base']}], which is "
                             "already wrapped in HessianLRAdaptation; an arm is wrapped once")
        return _declared_arm(name, json.dumps(table, sort_keys=True))
    parsed = parse_wrapped(name)
    if parsed is not None:
        if declared and parsed.base in declared:
            raise ValueError(f"optimizer {name!r}: {parsed.base} (an [arms.{parsed.base}] table) is already wrapped "
                             "in HessianLRAdaptation; an arm is wrapped once")
        return _wrapped_arm(name)
    if is_import_path(name):
        return _arm_from_path(name)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(ARMS)}, hessian-<arm>[-<estimator>] "
                     "(that arm wrapped in HessianLRAdaptation), or give an import path 'package.module:name' of an "
                     "arm or optimizer factory")


def parse_arm_names(names: str | Iterable[str], declared: Declared | None = None) -> tuple[str, ...]:
    """``"adam,hessian-adam"`` or a list -> validated, de-duplicated names in order.

    Every arm is resolved (import paths imported; ``declared``: ``[arms.NAME]`` tables, see
    :func:`get_arm`) and an arm whose package is missing is refused here, before any training
    starts."""
    if isinstance(names, str):
        items = names.split(",")
    elif isinstance(names, (list, tuple)):
        items = list(names)
    else:
        raise ValueError(f"optimizers must be a comma-separated string or a list of names, got {names!r}")
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"optimizers must be names (strings), got {item!r}")
    cleaned = tuple(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not cleaned:
        raise ValueError("optimizers must name at least one optimizer")
    for name in cleaned:
        arm = get_arm(name, declared)
        missing = arm.missing_requirement()
        if missing is not None:
            raise ValueError(f"optimizer {name!r} needs the {missing.replace('_', '-')} package: "
                             "pip install 'hessian-lr[baselines]'")
    return cleaned


def provenance(arm: Arm) -> dict[str, Any]:
    """Where ``arm`` comes from and what it is: its source (module or import path), description,
    training step, the distribution and version of every package it requires (``None`` for
    a module that is not an installed distribution, e.g. a file in the current directory),
    whether it normalises per coordinate (``normalises``: true, false or null), and for a
    wrapped arm what it wraps (``wraps``: the base arm's name and source, the estimator and its
    options)."""
    packages = package_versions(arm.requires)
    found = {"source": arm.source, "description": arm.description, "step": arm.step.describe(),
             "second_order": arm.second_order, "packages": packages, "normalises": arm.normalises}
    if arm.wraps is not None:
        found["wraps"] = {"base": arm.wraps.base.name, "source": arm.wraps.base.source,
                          "estimator": arm.wraps.estimator, "options": dict(arm.wraps.options)}
    return found
