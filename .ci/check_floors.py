"""Check that .ci/floors.txt pins exactly the lower bound pyproject.toml declares for each
dependency (a post release of that version counts as it: mnist1d 0.0.2 exists only as
0.0.2.post1), so `make test-floors` tests the floors users are promised."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
UNTESTABLE = {"torch": "only torch 2.13.0 may be installed here (constraints.txt)"}


def release(version: Version, length: int = 3) -> tuple[int, ...]:
    return (version.release + (0,) * length)[:length]


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        declared += [Requirement(r) for r in extra if not r.startswith("hessian-lr")]
    pins = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = Version(version.strip())
    problems = []
    for requirement in declared:
        name = requirement.name.lower().replace("_", "-")
        floors = [s.version for s in requirement.specifier if s.operator == ">="]
        if name in UNTESTABLE:
            print(f"floor of {name} not tested: {UNTESTABLE[name]}")
            continue
        if not floors:
            problems.append(f"{name}: pyproject.toml declares no lower bound")
        elif name not in pins:
            problems.append(f"{name}: no pin in .ci/floors.txt")
        elif release(pins[name]) != release(Version(floors[0])) or pins[name] not in requirement.specifier:
            problems.append(f"{name}: .ci/floors.txt pins {pins[name]}, pyproject.toml's floor is {floors[0]}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
