"""The comparison's configuration: defaults < TOML file < command-line flags, validated once.

Every value is checked by type and range here, before anything is created: a string is never
a boolean, a non-finite or out-of-range number names its option, and search spaces are checked
against the optimizers they configure (:func:`validate_spaces`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from hessian_lr.arms import Arm, get_arm, parse_arm_names
from hessian_lr.arms.wrapping import check_table
from hessian_lr.training.placement import (
    DEVICE_CHOICES,
    PRECISIONS,
    Placement,
    device_record,
    resolve_device,
    resolve_placement,
)
from hessian_lr.tuning.space import PRESETS, Float, SearchSpace, space_from_toml, wide_space
from hessian_lr.workloads import get_workload

__all__ = ["CompareConfig", "load_toml", "available_cores", "arm_space", "declared_arms", "add_declared_arms",
           "MAX_WORKERS", "MAX_SEED"]

MAX_WORKERS = 256  # processes; far above any machine this runs on, low enough to refuse typos
MAX_THREADS = 1024
MAX_SEED = 2**32 - 1  # numpy's seed range (seed_everything seeds numpy too)
MAX_COUNT = 10**6  # trials, epochs
MAX_STEPS = 10**9  # optimizer steps, evaluation intervals
# The training options whose defaults are today's training: a config leaves them out of its stored
# form and its study fingerprint where they are at these values (so today's runs read as before).
_TRAINING_DEFAULTS: dict[str, Any] = {"steps": None, "eval_every": None, "device": "auto", "precision": "fp32",
                                      "compile": False}
# Models trained at once: a batch of trials (batch_trials) or of final seeds (seeds, when they
# train as one batch) is held in memory together, so these bound memory, not only typos.
MAX_BATCH = 1024
MAX_SEEDS = 1000
MAX_STUDIES = 1000


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset), which can
    be fewer than the machine's ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def _check_lr(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def arm_space(arm: Arm, preset: str, lr_range: tuple[float, float], override: SearchSpace | None) -> SearchSpace:
    """An arm's search space: ``override`` (a ``[space.ARM]`` table) if given, else the preset
    (``default``: the arm's own space; ``wide``: :func:`~hessian_lr.tuning.space.wide_space`),
    with a tuned lr's range set by ``lr_range`` (the ``--lr-low`` / ``--lr-high`` options)."""
    if override is not None:
        return override
    space = arm.space
    if "lr" in space and isinstance(space["lr"], Float) and space["lr"].log:
        space = space.replace(lr=Float(lr_range[0], lr_range[1], log=True))
    return wide_space(space, arm.defaults) if preset == "wide" else space


@dataclass(frozen=True)
class CompareConfig:
    """Everything that defines a ``compare`` run (``out`` and ``storage`` say where it lives).

    ``space`` is a preset name (``default`` or ``wide``); ``spaces`` holds per-arm spaces from a
    TOML file (``[space.ARM]`` tables, already parsed to JSON form), which replace the preset for
    those arms. ``arms`` holds arms declared by ``[arms.NAME]`` tables (a base arm wrapped with
    an estimator and its options, :mod:`hessian_lr.arms.wrapping`); :meth:`arm` resolves every
    name, declared or not. The default protocol is the write-up's with 10 paired seeds and the equal-lr
    ablation; ``seeds=1, ablation=False`` is the original one-final-run protocol.
    """

    workload: str = "mnist1d-mlp"
    optimizers: tuple[str, ...] = ("adam", "hessian-adam")
    trials: int = 20
    epochs: int | None = None  # None = the workload's default budget (20 for mnist1d-mlp)
    seed: int = 0
    lr_low: float = 1e-4
    lr_high: float = 1e-1
    space: str = "default"
    spaces: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    arms: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # [arms.NAME] tables
    workload_options: Mapping[str, Any] = field(default_factory=dict)  # [workload] table: the factory's options
    steps: int | None = None  # a budget in optimizer steps instead of epochs (None: the workload's, else epochs)
    eval_every: int | None = None  # evaluate every N steps (None: the workload's, else after every epoch)
    device: str = "auto"  # auto (CUDA where present, else CPU), cpu, cuda, cuda:N, mps
    precision: str = "fp32"  # fp32, bf16 (autocast), fp16 (autocast + GradScaler)
    compile: bool = False  # torch.compile the model (one model at a time)
    devices: tuple[str, ...] = ()  # one worker process per device (compare --devices cuda:0,cuda:1)
    seeds: int = 10  # final runs per arm (seeds seed .. seed+seeds-1), paired across arms
    ablation: bool = True  # also train every arm at every other arm's tuned lr
    studies: int = 1  # independent tuning studies per arm (different sampler seeds)
    threads: int | None = None  # intra-op threads per process; None = automatic (see below)
    workers: int = 0  # processes; 0 = automatic (see below)
    batch_trials: int = 1  # models trained at once (1 = one trial at a time)
    batch_startup: bool = True  # train TPE's 10 random start-up trials as one batch (same points)
    storage: str | None = None  # Optuna storage URL or journal path; None = DIR/optuna.journal
    study: str = "compare"  # prefix of the study names (one study per arm and study index)
    out: Path = Path("runs/compare")

    def __post_init__(self) -> None:
        object.__setattr__(self, "arms", declared_arms(self.arms))
        object.__setattr__(self, "optimizers", parse_arm_names(self.optimizers, self.arms))
        unused = sorted(set(self.arms) - set(self.optimizers))
        if unused:
            raise ValueError(f"arms.{unused[0]} is declared but not among the optimizers "
                             f"({', '.join(self.optimizers)})")
        if not isinstance(self.workload, str):
            raise ValueError(f"workload must be a name, got {self.workload!r}")
        if not isinstance(self.workload_options, Mapping):
            raise ValueError(f"workload_options must be a table of a workload factory's options, got "
                             f"{self.workload_options!r}")
        object.__setattr__(self, "workload_options", dict(self.workload_options))
        workload = get_workload(self.workload, self.workload_options)
        if self.epochs is None:
            object.__setattr__(self, "epochs", workload.epochs)
            if self.steps is None and workload.steps is not None:  # the workload's budget is in steps
                object.__setattr__(self, "steps", workload.steps)
        if self.eval_every is None and workload.eval_every is not None:
            object.__setattr__(self, "eval_every", workload.eval_every)
        for name in ("steps", "eval_every"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1, MAX_STEPS)
        _check_bool("compile", self.compile)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be {DEVICE_CHOICES}, got {self.device!r}")
        resolve_device(self.device)  # a device that is not there is an error before anything is created
        devices = self.devices.split(",") if isinstance(self.devices, str) else list(self.devices)
        object.__setattr__(self, "devices", tuple(resolve_device(d) for d in devices))
        if self.devices:
            if self.workers not in (0, len(self.devices)):
                raise ValueError(f"workers must be the number of devices ({len(self.devices)}) with devices "
                                 f"{','.join(self.devices)}, got {self.workers}")
            object.__setattr__(self, "workers", len(self.devices))
        for name, high in (("trials", MAX_COUNT), ("epochs", MAX_COUNT), ("seeds", MAX_SEEDS),
                           ("batch_trials", MAX_BATCH), ("studies", MAX_STUDIES)):
            _check_int(name, getattr(self, name), 1, high)
        _check_int("seed", self.seed, 0, MAX_SEED - self.seeds - self.studies)
        _check_int("workers", self.workers, 0, MAX_WORKERS)
        if self.threads is not None:
            _check_int("threads", self.threads, 1, MAX_THREADS)
        _check_bool("ablation", self.ablation)
        _check_bool("batch_startup", self.batch_startup)
        _check_lr("lr_low", self.lr_low)
        _check_lr("lr_high", self.lr_high)
        if not self.lr_low < self.lr_high:
            raise ValueError(f"lr range must satisfy 0 < lr_low < lr_high, got [{self.lr_low}, {self.lr_high}]")
        if self.space not in PRESETS:
            raise ValueError(f"space must be one of {', '.join(PRESETS)}, got {self.space!r}")
        if not isinstance(self.study, str) or not self.study or "." in self.study:
            raise ValueError(f"study must be a non-empty name without '.', got {self.study!r}")
        if self.storage is not None and (not isinstance(self.storage, str) or not self.storage.strip()):
            raise ValueError(f"storage must be a journal path or a database URL, got {self.storage!r}")
        if not isinstance(self.out, (str, Path)) or not str(self.out).strip():
            raise ValueError(f"out must be a folder path, got {self.out!r}")
        object.__setattr__(self, "out", Path(self.out))
        self._normalise_spaces()
        # Automatic placement. One-at-a-time training of a tiny model is Python-bound: one thread
        # per process and one process per arm. Batched training is GEMM-bound and its matrix
        # products release the GIL: one process whose arms train side by side in threads
        # ("lanes", see ``lanes``), the cores shared out as intra-op threads, which spares a
        # second process's ~1-3 s start-up.
        cores = available_cores()
        if self.workers == 0:
            workers = 1 if self.batched else max(1, min(len(self.optimizers), cores))
            object.__setattr__(self, "workers", workers)
        if self.threads is None:
            threads = max(1, cores // min(len(self.optimizers), cores)) if self.batched and self.workers == 1 else 1
            object.__setattr__(self, "threads", threads)

    def _normalise_spaces(self) -> None:
        if not isinstance(self.spaces, Mapping):
            raise ValueError(f"spaces must be a table of [space.ARM] tables, got {self.spaces!r}")
        unknown = sorted(set(self.spaces) - set(self.optimizers))
        if unknown:
            raise ValueError(f"space given for {', '.join(unknown)}, which is not among the optimizers "
                             f"({', '.join(self.optimizers)})")
        parsed = {}
        for arm, table in self.spaces.items():
            space = table if isinstance(table, SearchSpace) else (
                SearchSpace.from_json(table) if _is_json_space(table) else space_from_toml(table, f"space.{arm}"))
            parsed[arm] = space.to_json()
        object.__setattr__(self, "spaces", parsed)

    def arm(self, name: str) -> Arm:
        """The arm called ``name``, declared by an ``[arms.NAME]`` table of this run or not."""
        return get_arm(name, self.arms)

    @cached_property
    def arm_spaces(self) -> dict[str, SearchSpace]:
        """Each arm's resolved search space."""
        lr_range = (self.lr_low, self.lr_high)
        return {arm: arm_space(self.arm(arm), self.space, lr_range,
                               SearchSpace.from_json(self.spaces[arm]) if arm in self.spaces else None)
                for arm in self.optimizers}

    @cached_property
    def batched(self) -> bool:
        """Whether the arms train K models at once (``batch_trials`` > 1 and every arm's step
        stacks models); otherwise they train one at a time."""
        return self.batch_trials > 1 and all(self.arm(arm).step.stacks for arm in self.optimizers)

    @property
    def lanes(self) -> int:
        """How many of its tasks (an arm's trials and finals) one process runs at once, in
        threads: with batched training, as many as its cores hold at ``threads`` intra-op threads
        each; one-at-a-time training is Python-bound (the GIL), so one."""
        if not self.batched or self.workers != 1:
            return 1
        return max(1, min(len(self.optimizers), available_cores() // self.threads))

    @property
    def batching(self) -> bool:
        """Whether runs go through the batched engine (K models at once where the arm's step
        stacks, and one model on the engine's hand-written gradient path where that serves it).
        False only in the plain sequential mode — ``batch_trials`` 1 and no start-up batch —
        where every model trains alone in the plain reference loop."""
        return self.batch_trials > 1 or self.batch_startup

    @property
    def finals_batch(self) -> int:
        """How many final runs train at once: ``batch_trials`` when it is above 1, else all the
        seeds of a setting as one batch — except in the plain sequential mode (``batch_trials``
        1 and no start-up batch), where every model trains alone."""
        if self.batch_trials > 1:
            return self.batch_trials
        return self.seeds if self.batch_startup else 1

    @property
    def final_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    def study_seed(self, study_index: int) -> int:
        """The sampler seed of an arm's ``study_index``-th tuning study (0: ``seed`` itself)."""
        return self.seed + study_index

    @property
    def placement(self) -> Placement:
        """The resolved device, precision and compile of this process's training."""
        return resolve_placement(self.device, self.precision, self.compile)

    @cached_property
    def evaluations(self) -> int:
        """Evaluations per run after the first (the progress units of one run): ``epochs``, or under a
        step budget or an evaluation interval the evaluated steps after step 0."""
        if self.steps is None and self.eval_every is None:
            return self.epochs
        from hessian_lr.training.loop import Schedule

        workload = get_workload(self.workload, self.workload_options)
        return len(Schedule(workload.steps_per_epoch(), self.epochs, self.steps, self.eval_every).eval_steps) - 1

    def training_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`hessian_lr.training.train` besides ``epochs`` that this
        config sets: the step budget, the evaluation interval and the placement."""
        return {"steps": self.steps, "eval_every": self.eval_every, "placement": self.placement}

    def device_record(self) -> dict[str, Any]:
        """``{"device": ...}`` (:func:`~hessian_lr.training.placement.device_record`) for results.json,
        empty where this process trains on the CPU in float32 without compiling (today's runs)."""
        placement = self.placement
        return {} if placement.default else {"device": device_record(placement)}

    def study_fingerprint(self, arm: str) -> str:
        """Hash of what changes a trial's outcome for ``arm``; a study is only resumed under the
        same one. ``trials`` is not part of it: asking for more trials extends a finished study.
        The device is not part of it either: machines of any kind may serve one study."""
        key = {k: getattr(self, k) for k in ("workload", "epochs", "seed")}
        for name, default in _TRAINING_DEFAULTS.items():  # new options enter only where set
            if name != "device" and getattr(self, name) != default:
                key[name] = getattr(self, name)
        key["space"] = self.arm_spaces[arm].fingerprint()
        if self.workload_options:  # a workload factory's options change every trial
            key["workload_options"] = self.workload_options
        if arm in self.arms:  # a declared arm's base, estimator and options change its trials
            key["arm"] = self.arms[arm]
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["optimizers"] = list(self.optimizers)
        data["out"] = str(self.out)
        data["spaces"] = {arm: dict(space) for arm, space in self.spaces.items()}
        add_declared_arms(data, self.arms)
        if not self.workload_options:  # the stored config of a run without them is what it was before they existed
            data.pop("workload_options", None)
        drop_default_training_options(data)  # likewise the budget and placement options
        # Which devices this machine's processes use is the launching machine's business: a worker
        # joining the run elsewhere trains on its own (worker --device), and the run's results do not
        # depend on it.
        data.pop("devices", None)
        return data

    def resolved_spaces(self) -> dict[str, dict[str, Any]]:
        return {arm: space.to_json() for arm, space in self.arm_spaces.items()}

    def updated(self, **changes: Any) -> CompareConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def drop_default_training_options(data: dict[str, Any]) -> None:
    """Leave the step budget, evaluation interval, device, precision and compile out of a stored
    config where they are at their defaults (today's training), so those configs read as before."""
    for name, default in _TRAINING_DEFAULTS.items():
        if name in data and data[name] == default:
            data.pop(name)


def declared_arms(tables: Any) -> dict[str, dict[str, Any]]:
    """``[arms.NAME]`` tables, validated (:func:`~hessian_lr.arms.wrapping.check_table`), as
    plain data; a name that already names an arm is refused.

    Raises:
        ValueError: naming ``arms.NAME`` and the offending key.
    """
    if not isinstance(tables, Mapping):
        raise ValueError(f"arms must be a table of [arms.NAME] tables, got {tables!r}")
    checked = {}
    for name, table in tables.items():
        checked[name] = check_table(name, table)
        try:
            get_arm(name)
        except ValueError:
            continue
        raise ValueError(f"arms.{name}: {name!r} already names an arm; give the declared arm a name of its own")
    return checked


def add_declared_arms(data: dict[str, Any], arms: Mapping[str, Mapping[str, Any]]) -> None:
    """``data["arms"]`` as plain tables; left out when no arm is declared, so that the stored
    config of a run without ``[arms.NAME]`` tables is what it was before they existed."""
    if arms:
        data["arms"] = {name: dict(table) for name, table in arms.items()}
    else:
        data.pop("arms", None)


def _is_json_space(table: Any) -> bool:
    """Whether ``table`` is a space in :meth:`SearchSpace.to_json` form (from results.json or a
    study's stored config) rather than TOML form."""
    return isinstance(table, Mapping) and bool(table) and all(
        isinstance(v, Mapping) and v.get("type") in ("float", "int", "categorical", "fixed") for v in table.values())


CONFIG_KEYS = {f.name for f in fields(CompareConfig)} - {"spaces"}


def _split_table(data: dict[str, Any], key: str, name_key: str, rest_key: str) -> None:
    """A TOML table under ``key`` that may also name its value: ``data[key]`` becomes the table's
    ``name_key`` entry (dropped when it has none, so the flag or the default decides) and
    ``data[rest_key]`` the table's other entries."""
    table = data.get(key)
    if not isinstance(table, dict):
        return
    rest = dict(table)
    name = rest.pop(name_key, None)
    data[rest_key] = rest
    if name is None:
        del data[key]
    else:
        data[key] = name


def load_toml(path: Path, allowed: set[str] | None = None) -> dict[str, Any]:
    """Read a TOML config: keys as the CLI's long options (``-`` or ``_``), plus ``[space.ARM]``
    tables (or ``space = "wide"``; a ``[space]`` table may also hold ``preset = "wide"``),
    ``[arms.NAME]`` tables (arms of the run's own, validated by the config class) and a
    ``[workload]`` table (``name``, the workload, and its factory's keyword options).
    Keys outside ``allowed`` (default: :class:`CompareConfig`'s fields) are errors; types are
    checked by the config class."""
    allowed = (allowed or CONFIG_KEYS) - {"spaces"}
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ValueError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"invalid TOML in config file {path}: {exc}") from None
    data = {key.replace("-", "_"): value for key, value in raw.items()}
    _split_table(data, "space", "preset", "spaces")  # [space]: a preset and [space.ARM] tables
    _split_table(data, "workload", "name", "workload_options")  # [workload]: a name and a factory's options
    unknown = sorted(set(data) - allowed - {"spaces"})
    if unknown:
        raise ValueError(f"unknown key(s) in config file {path}: {', '.join(unknown)}")
    if isinstance(data.get("optimizers"), str):
        data["optimizers"] = data["optimizers"].split(",")
    if "storage" in data and not isinstance(data["storage"], str):
        raise ValueError(f"storage in config file {path} must be a string, got {data['storage']!r}")
    if "out" in data and not isinstance(data["out"], str):
        raise ValueError(f"out in config file {path} must be a string, got {data['out']!r}")
    return data
