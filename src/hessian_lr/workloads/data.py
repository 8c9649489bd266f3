"""A workload's data as batch streams, the on-disk cache, and offline mnist1d split into
train / validation / test tensors.

A workload's ``load_data()`` returns one of two kinds of data (:data:`WorkloadData`):

* :class:`Splits` — in-memory tensors of the three splits: the fast path. The skeleton moves them
  to the run's device once, draws one ``randperm`` per epoch from the run's generator and slices
  minibatches; K models of such a workload may train stacked.
* :class:`Loaders` — streams of ``(x, y)`` minibatches: a user's ``torch.utils.data.DataLoader``
  with its own augmentation and workers, or any iterable (e.g. images held as one uint8 tensor on
  the device, augmented a whole batch at a time). The skeleton builds one training stream per run
  from a ``torch.Generator`` seeded with the run's seed, iterates it once per epoch and moves each
  batch to the device (non-blocking from pinned memory); such runs train one model at a time.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["Splits", "Loaders", "Batch", "WorkloadData", "minibatches", "cache_dir", "cached_arrays", "package_version", "features", "labels", "load_mnist1d",
           "mnist1d_splits"]

VALIDATION_ROWS = 500  # of mnist1d's 4,000 training rows; 3,500 remain = 35 batches of 100
SPLIT_SEED = 1234  # fixed, so every experiment seed sees the same validation rows


@dataclass(frozen=True)
class Splits:
    """float32 features; int64 labels (classification) or float32 targets (regression).

    Tuning uses train/val only; test is read by the final runs.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        return int(torch.cat([self.y_train, self.y_val, self.y_test]).max()) + 1

    def to(self, device: torch.device | str) -> Splits:
        """The splits on ``device`` (these very tensors where they are there already)."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        return Splits(*(t.to(device) for t in (self.x_train, self.y_train, self.x_val, self.y_val,
                                               self.x_test, self.y_test)))


Batch = tuple[Tensor, Tensor]  # (inputs, targets) of one minibatch, rows first


@dataclass(frozen=True)
class Loaders:
    """A workload's data as streams of ``(x, y)`` minibatches (the loader-fed contract).

    Every random draw of the data — order, augmentation, the seeds of a DataLoader's workers —
    comes from the generator handed to :attr:`train`, so two runs with the same seed see the same
    batches (paired seeds stay paired across arms) and a run retrained after a kill sees the
    batches it saw before. For a ``torch.utils.data.DataLoader`` pass it as ``generator=``
    (torch then draws the sampler's order and every worker's base seed from it, and seeds torch,
    ``random`` and numpy in each worker from that base seed)::

        Loaders(train=lambda g: DataLoader(train_set, batch_size=128, shuffle=True, generator=g,
                                           num_workers=2, pin_memory=True, drop_last=True),
                val=lambda: DataLoader(val_set, batch_size=512),
                test=lambda: DataLoader(test_set, batch_size=512))

    Attributes:
        train: ``train(generator)`` → the run's training stream; called once per run with a CPU
            ``torch.Generator`` seeded with the run's seed; every ``iter()`` of it is one epoch.
            A stream on a device may draw its random numbers on the CPU from ``generator`` (small
            index tensors) and move them, or seed a device generator from ``generator``.
        val: ``val()`` → the validation batches, in a fixed order, without augmentation.
        test: ``test()`` → the test batches (None: the workload has no test split).
        steps_per_epoch: batches per epoch; None reads ``len()`` of a training stream (required
            where the stream has no length, e.g. random windows of a text).
    """

    train: Callable[[torch.Generator], Iterable[Batch]]
    val: Callable[[], Iterable[Batch]]
    test: Callable[[], Iterable[Batch]] | None = None
    steps_per_epoch: int | None = None

    def epoch_length(self) -> int:
        """Batches per epoch: :attr:`steps_per_epoch`, else the length of a training stream."""
        if self.steps_per_epoch is not None:
            if self.steps_per_epoch < 1:
                raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
            return self.steps_per_epoch
        stream = self.train(torch.Generator().manual_seed(0))
        try:
            return len(stream)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError("Loaders.steps_per_epoch is required: the training stream has no len()") from None


WorkloadData = Splits | Loaders


def minibatches(x: Tensor, y: Tensor, batch_size: int | None) -> Iterator[Batch]:
    """``(x, y)`` in consecutive slices of ``batch_size`` rows (one slice of everything for None)."""
    if batch_size is None or batch_size >= len(x):
        yield x, y
        return
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


def cache_dir() -> Path:
    """``$HESSIAN_LR_CACHE``, else ``$XDG_CACHE_HOME/hessian-lr``, else ``~/.cache/hessian-lr``."""
    if os.environ.get("HESSIAN_LR_CACHE"):
        return Path(os.environ["HESSIAN_LR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hessian-lr"


def _atomic_save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cache_path(cache: Path | None) -> Path:
    """The npz for the installed mnist1d release. Its default dataset arguments are fixed per
    release, so the version names the data without importing ``mnist1d.data`` (which pulls in
    scipy and matplotlib: ~0.6 s of every process start on a cache hit)."""
    return (cache or cache_dir()) / f"mnist1d-{package_version('mnist1d')}.npz"


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at ``path`` (an ``.npz``), else ``build()``'s, saved there atomically.

    A corrupt file is rebuilt, not trusted. Keys ending in ``_json`` are stored for provenance
    and not returned.
    """
    if path.exists():
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files if not k.endswith("_json")}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)
    arrays = build()
    _atomic_save_npz(path, arrays)
    return {k: v for k, v in arrays.items() if not k.endswith("_json")}


def package_version(name: str) -> str:
    """The installed version of ``name`` as a file-name-safe string (``"unknown"`` if absent)."""
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return "".join(c if c.isalnum() or c in "._+" else "_" for c in version)


def load_mnist1d(cache: Path | None = None) -> dict[str, np.ndarray]:
    """The standard mnist1d arrays (``get_dataset_args()`` defaults), built offline by the
    ``mnist1d`` package on first use and cached per mnist1d release.

    Never calls ``mnist1d.data.get_dataset`` (it tries a download). ``make_dataset`` reseeds
    numpy's global RNG as a side effect; the state is restored afterwards. The arguments used are
    stored in the file (``args_json``) for provenance.
    """

    def build() -> dict[str, np.ndarray]:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        rng_state = np.random.get_state()
        try:
            built = make_dataset(args)
        finally:
            np.random.set_state(rng_state)
        arrays = {k: np.asarray(built[k]) for k in ("x", "y", "x_test", "y_test")}
        return {**arrays, "args_json": np.array(json.dumps(vars(args), sort_keys=True, default=str))}

    return cached_arrays(_cache_path(cache), build)


def features(a: np.ndarray | Tensor) -> Tensor:
    """float32, contiguous (features and regression targets)."""
    return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))


def labels(a: np.ndarray | Tensor) -> Tensor:
    """int64, contiguous (class labels)."""
    return torch.as_tensor(np.ascontiguousarray(a, dtype=np.int64))


def mnist1d_splits(validation_rows: int = VALIDATION_ROWS, cache: Path | None = None) -> Splits:
    """Train/validation carved from mnist1d's training rows by a fixed permutation; test untouched."""
    data = load_mnist1d(cache)
    x, y = data["x"], data["y"]
    if not 0 < validation_rows < len(x):
        raise ValueError(f"validation_rows must be in (0, {len(x)}), got {validation_rows}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    val_idx, train_idx = order[:validation_rows], order[validation_rows:]

    return Splits(
        x_train=features(x[train_idx]),
        y_train=labels(y[train_idx]),
        x_val=features(x[val_idx]),
        y_val=labels(y[val_idx]),
        x_test=features(data["x_test"]),
        y_test=labels(data["y_test"]),
    )
