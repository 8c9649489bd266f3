"""Objects of your own named by an import path ``package.module:attribute`` (arms, workloads), and
where they come from.

:func:`import_object` imports ``package.module`` — the current folder is searched too, as
``python -m`` would, but after the installed packages, so a local file never shadows one — and
takes ``attribute`` (dotted for nested attributes). Every failure is one ``ValueError`` line that
names what was being imported (``optimizer 'x:y': ...``, ``workload 'x:y': ...``).
:func:`package_versions` records the installed distribution and version of a package (``None``
for a module that is no installed distribution, e.g. a file in the current folder).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any

__all__ = ["is_import_path", "import_object", "module_of", "distribution_of", "package_versions"]


def is_import_path(name: object) -> bool:
    """Whether ``name`` is an import path (``module:attribute``) rather than a registered name."""
    return isinstance(name, str) and ":" in name


def module_of(path: str) -> str:
    """The module part of an import path."""
    return path.partition(":")[0]


def _import_module(module: str, path: str, what: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # after site-packages: a local file never shadows an installed package
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"{what} {path!r}: cannot import module {module!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise ValueError(f"{what} {path!r}: importing module {module!r} raised {type(exc).__name__}: {exc}") from None


def import_object(path: str, what: str) -> Any:
    """The object ``path`` (``package.module:attribute``) names.

    Args:
        path: the import path.
        what: what the object is meant to be, for messages (``"optimizer"``, ``"workload"``).

    Raises:
        ValueError: a malformed path, a module that cannot be imported (or raises while it is),
            or a missing attribute — one line naming ``what`` and ``path``.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{what} {path!r}: an import path is 'package.module:name'")
    target: Any = _import_module(module_name, path, what)
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def distribution_of(package: str) -> tuple[str | None, str | None]:
    """The installed distribution that provides top-level package ``package``, and its version;
    ``(None, None)`` when none does (a module in the current folder, ``__main__``)."""
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


def package_versions(packages: Iterable[str]) -> dict[str, dict[str, str | None]]:
    """``package -> {"distribution", "version"}`` for each top-level package (see :func:`distribution_of`)."""
    versions = {}
    for package in packages:
        dist, version = distribution_of(package)
        versions[package] = {"distribution": dist, "version": version}
    return versions
