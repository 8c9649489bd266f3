"""``hessian-lr data download``: fetch a data set once, verify its published checksum, install it atomically.

Only this command reaches the network; training, tests and CI read what is on disk. A download is
streamed into a temporary file beside its destination, its checksum compared with the published
one, the archive unpacked into a temporary folder, the result read back by the workload's own
reader, and only then moved into place with one rename — an interrupted or failed download leaves
nothing behind and never replaces good data with bad.

Sources (:data:`SOURCES`):

- ``cifar10``: https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, md5
  ``c58f30108f718f92721af3b95e74349a`` (the page's published checksum, also torchvision's), unpacked
  to ``<data dir>/cifar-10-batches-py/``.
- ``shakespeare``: char-rnn's ``data/tinyshakespeare/input.txt`` (the URL nanoGPT's ``prepare.py``
  reads), 1,115,394 bytes, sha256 ``86c4e6aa…65ed``, saved as ``<data dir>/shakespeare_char/input.txt``.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hessian_lr.workloads import cifar10, shakespeare
from hessian_lr.workloads.datadir import resolve_data_dir

__all__ = ["Source", "SOURCES", "DownloadError", "download", "installed_path", "open_url"]

CHUNK = 1 << 20
TIMEOUT_S = 60


class DownloadError(Exception):
    """A download that failed for a reason outside the user's input (the network, a checksum that
    does not match): the CLI reports it as one line with exit code 1."""


@dataclass(frozen=True)
class Source:
    """Where a data set comes from and how it is checked and installed.

    Attributes:
        name: the data set (``hessian-lr data download NAME``).
        url: the file fetched.
        algorithm: the checksum's hashlib name; digest: its published hex value.
        size: the file's length in bytes, when published.
        installed: the path the data set occupies under the data folder (a folder or a file).
        archive: the URL is a ``.tar.gz`` whose folder ``installed`` is the data set (else the
            file itself is saved as ``installed``).
        check: reads the installed data from a data folder, raising on anything malformed.
    """

    name: str
    url: str
    algorithm: str
    digest: str
    size: int | None
    installed: str
    archive: bool
    check: Callable[[Path], object]


SOURCES: dict[str, Source] = {
    "cifar10": Source(
        name="cifar10", url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", algorithm="md5",
        digest="c58f30108f718f92721af3b95e74349a", size=None, installed=cifar10.FOLDER,
        archive=True, check=cifar10.load_cifar10),
    "shakespeare": Source(
        name="shakespeare", url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
        "input.txt", algorithm="sha256", digest="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        size=1_115_394, installed=f"{shakespeare.FOLDER}/{shakespeare.FILE}", archive=False,
        check=shakespeare.load_shakespeare),
}


def open_url(url: str) -> BinaryIO:
    """The response stream of ``url`` (the one place this package opens the network)."""
    return urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 - fixed https URLs above


def installed_path(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where data set ``name`` lives under the data folder (resolved as the readers do)."""
    return resolve_data_dir(data_dir) / _source(name).installed


def _source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(SOURCES)}") from None


def download(name: str, data_dir: str | os.PathLike[str] | None = None, force: bool = False,
             opener: Callable[[str], BinaryIO] | None = None) -> Path:
    """Fetch, verify and install data set ``name`` under the data folder.

    Data that are already there and read back cleanly are kept (no network) unless ``force``.

    Args:
        name: a key of :data:`SOURCES`.
        data_dir: the data folder (None: ``$HESSIAN_LR_DATA``, else the default).
        force: download again even when the installed data read cleanly.
        opener: opens a URL for reading (default :func:`open_url`; tests pass a local file).

    Returns:
        The installed path.

    Raises:
        ValueError: an unknown name, or a data folder that exists as a file.
        DownloadError: the transfer failed or the file does not match its published checksum or
            size (nothing is left behind).
    """
    source = _source(name)
    root = resolve_data_dir(data_dir)
    target = root / source.installed
    if root.exists() and not root.is_dir():
        raise ValueError(f"--data-dir {root} is not a folder")
    if target.exists() and not force and _reads_cleanly(source, root):
        return target
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        _install(source, root, opener or open_url)
    except BaseException:
        if created_root and not any(root.iterdir()):
            root.rmdir()  # a failed first download leaves no trace, not even the folder
        raise
    return target


def _install(source: Source, root: Path, opener: Callable[[str], BinaryIO]) -> None:
    """Fetch into a scratch folder under ``root``, unpack, read back, then rename into place."""
    target = root / source.installed
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{source.name}-download-") as scratch:
        fetched = Path(scratch) / Path(source.url).name
        _fetch(source, opener, fetched)
        staged_root = Path(scratch) / "staged"  # laid out as the data folder will be
        staged = staged_root / source.installed
        if source.archive:
            _extract_folder(fetched, source.installed, staged_root)
        else:
            staged.parent.mkdir(parents=True)
            os.replace(fetched, staged)
        try:
            source.check(staged_root)
        except ValueError as exc:
            raise DownloadError(f"{source.url} matches its checksum but does not read as {source.name}: "
                                f"{exc}") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            os.replace(target, Path(scratch) / "previous")  # deleted with the scratch folder
        os.replace(staged, target)


def _reads_cleanly(source: Source, root: Path) -> bool:
    try:
        source.check(root)
    except ValueError:
        return False
    return True


def _fetch(source: Source, opener: Callable[[str], BinaryIO], destination: Path) -> None:
    """Stream ``source.url`` into ``destination``, hashing it; a mismatch raises DownloadError."""
    digest = hashlib.new(source.algorithm)
    size = 0
    try:
        with opener(source.url) as response, destination.open("wb") as out:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors, as are socket timeouts
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise DownloadError(f"cannot download {source.url}: {reason}") from None
    if source.size is not None and size != source.size:
        raise DownloadError(f"{source.url} gave {size:,} bytes, expected {source.size:,}; nothing was installed")
    if digest.hexdigest() != source.digest:
        raise DownloadError(f"{source.url} does not match its published {source.algorithm} {source.digest} "
                            f"(got {digest.hexdigest()}); nothing was installed")


def _extract_folder(archive: Path, member: str, destination: Path) -> None:
    """Unpack folder ``member`` of a ``.tar.gz`` (and nothing else) into ``destination``; tarfile's
    "data" filter refuses links out of it, devices and paths that leave the folder."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            wanted = [m for m in tar.getmembers() if m.name == member or m.name.startswith(member + "/")]
            if not wanted:
                raise DownloadError(f"{archive.name} holds no {member}/ folder; nothing was installed")
            tar.extractall(destination, members=wanted, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"{archive.name} is not a readable .tar.gz ({exc}); nothing was installed") from None
