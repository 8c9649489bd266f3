"""Where data sets read from disk live, and the one-line error for a missing or corrupt one.

The readers (:mod:`hessian_lr.workloads.cifar10`, :mod:`hessian_lr.workloads.shakespeare`) and the
downloader (:mod:`hessian_lr.workloads.datasets`) resolve the folder the same way: the folder given
(``--data-dir``), else ``$HESSIAN_LR_DATA``, else ``data/`` under the package's cache folder
(``$HESSIAN_LR_CACHE``, else ``$XDG_CACHE_HOME/hessian-lr``, else ``~/.cache/hessian-lr``).
"""

from __future__ import annotations

import os
from pathlib import Path

from hessian_lr.workloads.data import cache_dir

__all__ = ["DATA_ENV", "DatasetError", "resolve_data_dir", "download_hint", "dataset_error"]

DATA_ENV = "HESSIAN_LR_DATA"


class DatasetError(ValueError):
    """A data set that is missing or does not read as its format says: one line naming the file and
    the command that gets it (a ValueError, so the CLI reports it with exit code 2)."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$HESSIAN_LR_DATA``, else ``<cache>/data``.

    Args:
        data_dir: the folder the user named (``--data-dir``), or None.

    Returns:
        The folder (not created, not checked: the reader or the downloader reports what is wrong).
    """
    if data_dir is not None and str(data_dir).strip():
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_ENV, "").strip():
        return Path(os.environ[DATA_ENV]).expanduser()
    return cache_dir() / "data"


def download_hint(dataset: str, data_dir: Path) -> str:
    """The command that fetches ``dataset`` into ``data_dir`` (quoted in every data error)."""
    return f"get it with 'hessian-lr data download {dataset} --data-dir {data_dir}'"


def dataset_error(path: Path, problem: str, dataset: str, data_dir: Path) -> DatasetError:
    """``DatasetError("<path>: <problem>; get it with 'hessian-lr data download ...'")``."""
    return DatasetError(f"{dataset} data file {path}: {problem}; {download_hint(dataset, data_dir)}")
