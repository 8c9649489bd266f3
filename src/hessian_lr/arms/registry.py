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
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections.abc import Iterable
from dataclasses import replace
from functools import lru_cache
from typing import Any

from hessian_lr.arms.base import Arm, signature_defaults

__all__ = ["ARMS", "register", "get_arm", "parse_arm_names", "is_import_path", "provenance"]

ARMS: dict[str, Arm] = {}


def register(arm: Arm) -> Arm:
    if arm.name in ARMS:
        raise ValueError(f"an arm named {arm.name!r} is already registered")
    ARMS[arm.name] = arm
    return arm


def is_import_path(name: str) -> bool:
    return ":" in name


def _import_module(module: str, path: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # after site-packages: a local file never shadows an installed package
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"optimizer {path!r}: cannot import module {module!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise ValueError(f"optimizer {path!r}: importing module {module!r} raised "
                         f"{type(exc).__name__}: {exc}") from None


@lru_cache(maxsize=None)
def _arm_from_path(path: str) -> Arm:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"optimizer {path!r}: an import path is 'package.module:name'")
    target: Any = _import_module(module_name, path)
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"optimizer {path!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if isinstance(target, Arm):
        return replace(target, name=path, source=path)
    if not callable(target):
        raise ValueError(f"optimizer {path!r} is a {type(target).__name__}, not an Arm or an optimizer factory "
                         "(params, lr, **hyperparameters) -> torch.optim.Optimizer")
    package = module_name.split(".")[0]
    doc = (getattr(target, "__doc__", None) or "").strip().splitlines()
    return Arm(path, target, description=f"{path} (imported){': ' + doc[0] if doc else ''}",
               defaults=signature_defaults(target), source=path,
               requires=(package,) if package not in ("torch", "__main__") else ("torch",))


def get_arm(name: str) -> Arm:
    """The arm called ``name``: a registered name or an import path ``module:attribute``.

    Raises:
        ValueError: an unknown name, or an import path that cannot be imported or names
            something that is neither an arm nor a factory.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an optimizer name must be a non-empty string, got {name!r}")
    if name in ARMS:
        return ARMS[name]
    if is_import_path(name):
        return _arm_from_path(name)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(ARMS)}, or give an import path "
                     "'package.module:name' of an arm or optimizer factory")


def parse_arm_names(names: str | Iterable[str]) -> tuple[str, ...]:
    """``"adam,hessian-adam"`` or a list -> validated, de-duplicated names in order.

    Every arm is resolved (import paths imported) and an arm whose package is missing is
    refused here, before any training starts."""
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
        arm = get_arm(name)
        missing = arm.missing_requirement()
        if missing is not None:
            raise ValueError(f"optimizer {name!r} needs the {missing.replace('_', '-')} package: "
                             "pip install 'hessian-lr[baselines]'")
    return cleaned


def _distribution_of(package: str) -> tuple[str | None, str | None]:
    try:
        distributions = importlib.metadata.packages_distributions().get(package) or []
    except Exception:  # noqa: BLE001 - broken metadata of some installed package
        distributions = []
    for dist in distributions:
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None, None


def provenance(arm: Arm) -> dict[str, Any]:
    """Where ``arm`` comes from and what it is: its source (module or import path), description,
    training step, and the distribution and version of every package it requires (``None`` for
    a module that is not an installed distribution, e.g. a file in the current directory)."""
    packages = {}
    for package in arm.requires:
        dist, version = _distribution_of(package)
        packages[package] = {"distribution": dist, "version": version}
    return {"source": arm.source, "description": arm.description, "step": arm.step.describe(),
            "second_order": arm.second_order, "packages": packages}
