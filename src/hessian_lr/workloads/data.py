"""Offline mnist1d, cached on disk, split into train / validation / test tensors."""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["Splits", "cache_dir", "load_mnist1d", "mnist1d_splits"]

VALIDATION_ROWS = 500  # of mnist1d's 4,000 training rows; 3,500 remain = 35 batches of 100
SPLIT_SEED = 1234  # fixed, so every experiment seed sees the same validation rows


@dataclass(frozen=True)
class Splits:
    """float32 features and int64 labels; tuning uses train/val only, test is read at the end."""

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
    try:
        version = importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    safe = "".join(c if c.isalnum() or c in "._+" else "_" for c in version)
    return (cache or cache_dir()) / f"mnist1d-{safe}.npz"


def load_mnist1d(cache: Path | None = None) -> dict[str, np.ndarray]:
    """The standard mnist1d arrays (``get_dataset_args()`` defaults), built offline by the
    ``mnist1d`` package on first use and cached per mnist1d release.

    Never calls ``mnist1d.data.get_dataset`` (it tries a download). ``make_dataset`` reseeds
    numpy's global RNG as a side effect; the state is restored afterwards. The arguments used are
    stored in the file (``args_json``) for provenance.
    """
    path = _cache_path(cache)
    if path.exists():
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files if k != "args_json"}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)  # a corrupt cache is rebuilt, not trusted
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    rng_state = np.random.get_state()
    try:
        built = make_dataset(args)
    finally:
        np.random.set_state(rng_state)
    arrays = {k: np.asarray(built[k]) for k in ("x", "y", "x_test", "y_test")}
    provenance = np.array(json.dumps(vars(args), sort_keys=True, default=str))
    _atomic_save_npz(path, {**arrays, "args_json": provenance})
    return arrays


def mnist1d_splits(validation_rows: int = VALIDATION_ROWS, cache: Path | None = None) -> Splits:
    """Train/validation carved from mnist1d's training rows by a fixed permutation; test untouched."""
    data = load_mnist1d(cache)
    x, y = data["x"], data["y"]
    if not 0 < validation_rows < len(x):
        raise ValueError(f"validation_rows must be in (0, {len(x)}), got {validation_rows}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    val_idx, train_idx = order[:validation_rows], order[validation_rows:]

    def features(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    def labels(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    return Splits(
        x_train=features(x[train_idx]),
        y_train=labels(y[train_idx]),
        x_val=features(x[val_idx]),
        y_val=labels(y[val_idx]),
        x_test=features(data["x_test"]),
        y_test=labels(data["y_test"]),
    )
