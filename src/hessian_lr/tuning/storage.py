"""Where a run's Optuna studies live: checked before anything is created, a journal file repaired
when it was torn, a database reconnected when its server restarts.

``--storage`` is a journal-file path (default ``OUT/optuna.journal``) or a database URL
(``sqlite:///x.db``, ``postgresql+psycopg2://user@host:port/db``).

- :func:`check_storage` refuses, with one message that names it, a storage that cannot be used:
  an unknown URL scheme, a missing driver, a database that does not answer, an sqlite file in a
  folder that does not exist, a journal path that is a folder, unwritable or not a journal.
- Journal files are written under :class:`KernelJournalLock` (``fcntl.flock``; the kernel drops
  it when its process dies). An append that fails (a full disk) is cut back to the last whole
  line before the error is raised (:class:`JournalWriteError`, naming the file). A journal left
  with a half-written line anyway (a copy truncated mid-line, a kill during a large write) is
  repaired when it is opened: under the lock, the original is copied aside
  (``optuna.journal.damaged-<time>``) and the incomplete lines are dropped — lines no reader ever
  applied, so every trial that finished is kept. More damage than that is refused with a
  message that names the file and what to do.
- Database storages send heartbeats (a dead worker's trial is failed after ``GRACE_S`` and queued
  again) and retry every call for ``RETRY_S`` seconds while the server is unreachable (a restart),
  then stop with :class:`StorageLost`, whose message names the storage.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from hessian_lr.results import atomic_write_bytes
from hessian_lr.tuning import optuna_api
from hessian_lr.tuning.optuna_api import StorageLost

__all__ = ["storage_for", "journal_storage", "check_storage", "KernelJournalLock", "StorageError", "StorageLost",
           "JournalWriteError", "repair_journal", "display_storage", "folder_problem", "is_url", "HEARTBEAT_S", "GRACE_S", "RETRY_S"]

log = logging.getLogger("hessian_lr")

# How often a running trial reports to a database storage, and how long silence means a dead worker.
HEARTBEAT_S = int(os.environ.get("HESSIAN_LR_HEARTBEAT_S", 5))
GRACE_S = int(os.environ.get("HESSIAN_LR_GRACE_S", 20))
# How long a database call is retried while the server does not answer (a restart takes seconds).
RETRY_S = float(os.environ.get("HESSIAN_LR_DB_RETRY_S", 60))
CONNECT_TIMEOUT_S = 10
MAX_DAMAGED_LINES = 2  # a torn append, and one later append glued onto it


class StorageError(ValueError):
    """A storage that cannot be used (bad input: the command's one-line error, exit code 2)."""


class JournalWriteError(RuntimeError):
    """Writing the journal failed (e.g. the disk is full); the file was left at its last whole line."""


def is_url(spec: str | None) -> bool:
    return bool(spec) and "://" in spec  # type: ignore[operator]


def display_storage(spec: str) -> str:
    """The storage as it may be shown: a URL without its password."""
    if not is_url(spec):
        return spec
    try:
        import sqlalchemy.engine

        return sqlalchemy.engine.make_url(spec).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy can read: show only its scheme
        return spec.split("://", 1)[0] + "://..."


# -- journal files ------------------------------------------------------------------------------------

class KernelJournalLock:
    """The journal's write lock as ``fcntl.flock`` on ``<journal>.flock`` (Optuna's journal lock
    interface: ``acquire``/``release``, as ``JournalFileBackend(lock_obj=...)`` takes it).

    The kernel drops a flock when its process dies, so a run killed with SIGKILL in the middle of
    a write never leaves a stale lock behind. (Optuna's default lock is a symlink, made for NFSv2;
    a killed holder leaves it, and the next run waits out a 30 s grace period before breaking
    it.) Every process and thread of hessian-lr that writes a journal uses this lock; an Optuna
    program of your own writing the same journal at the same time must pass it too
    (``JournalFileBackend(path, lock_obj=KernelJournalLock(path))``).
    """

    def __init__(self, journal_path: str) -> None:
        self.path = journal_path + ".flock"
        self._held = threading.local()  # the descriptor a thread holds the lock through

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._held.fd = fd
        return True

    def release(self) -> None:
        fd = getattr(self._held, "fd", None)
        if fd is None:
            raise RuntimeError("Error: did not possess lock")
        self._held.fd = None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def _journal_backend_class() -> type:
    base = optuna_api.journal_file_backend()

    class JournalBackend(base):  # type: ignore[misc, valid-type]
        """Optuna's journal file whose appends never leave half a line: one write, cut back to the
        previous end if it fails, and the failure raised as :class:`JournalWriteError`."""

        def __init__(self, file_path: str, lock_obj: KernelJournalLock) -> None:
            super().__init__(file_path, lock_obj=lock_obj)
            self.hlr_path, self.hlr_lock = file_path, lock_obj

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            from hessian_lr import interrupts

            data = memoryview(b"".join(optuna_api.journal_line(entry) for entry in logs))
            with interrupts.deferred(), self.hlr_lock.held():
                try:
                    fd = os.open(self.hlr_path, os.O_WRONLY | os.O_APPEND)
                except OSError as exc:
                    raise JournalWriteError(f"cannot write the journal {self.hlr_path}: {exc.strerror or exc}") from None
                try:
                    end = os.fstat(fd).st_size
                    try:
                        while data:
                            data = data[os.write(fd, data):]
                        os.fsync(fd)
                    except OSError as exc:
                        try:
                            os.ftruncate(fd, end)
                        except OSError:
                            pass
                        raise JournalWriteError(f"cannot write the journal {self.hlr_path}: "
                                                f"{exc.strerror or exc}") from None
                finally:
                    os.close(fd)

    return JournalBackend


_backend_class: type | None = None


def _is_journal_record(line: bytes) -> bool:
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and optuna_api.JOURNAL_OP_KEY in entry


def _tail_is_whole(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return True
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def _backup_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.damaged-{stamp}")
    counter = 1
    while candidate.exists():
        counter += 1
        candidate = path.with_name(f"{path.name}.damaged-{stamp}-{counter}")
    return candidate


def _repair_locked(path: Path) -> str | None:
    data = path.read_bytes()
    if not data:
        return None
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    bad = [i for i, line in enumerate(lines) if not _is_journal_record(line)]
    if not bad and not tail:
        return None
    good = len(lines) - len(bad)
    if good == 0:
        raise StorageError(f"{path} is not an Optuna journal (its first line is not a journal record); "
                           "name another file with --storage, or move this one aside")
    if len(bad) + bool(tail) > MAX_DAMAGED_LINES:
        raise StorageError(f"the journal {path} is damaged on {len(bad) + bool(tail)} lines (the first is line "
                           f"{(bad or [len(lines)])[0] + 1}) and cannot be repaired safely: restore it from a copy, or "
                           "move it aside to start its studies afresh")
    backup = _backup_name(path)
    try:
        shutil.copy2(path, backup)
        dropped = set(bad)
        kept = b"".join(line + b"\n" for i, line in enumerate(lines) if i not in dropped)
        atomic_write_bytes(path, kept, mode=path.stat().st_mode & 0o777)
    except OSError as exc:
        raise JournalWriteError(f"cannot repair the journal {path}: {exc.strerror or exc}") from None
    what = []
    if tail:
        what.append("a half-written last line")
    if bad:
        what.append(f"{len(bad)} incomplete line(s) (line {', '.join(str(i + 1) for i in bad)})")
    return f"repaired the journal {path}: dropped {' and '.join(what)}, operations no reader had applied " \
           f"(the original is kept as {backup.name})"


def repair_journal(path: Path | str) -> str | None:
    """Repair ``path`` in place if it holds incomplete lines (see the module docstring), under
    the journal's lock; returns what was done, or None if the journal was whole."""
    path = Path(path)
    if not path.is_file():
        return None
    with KernelJournalLock(str(path)).held():
        return _repair_locked(path)


def _open_journal(path: Path) -> optuna.storages.JournalStorage:
    global _backend_class
    if _backend_class is None:
        _backend_class = _journal_backend_class()
    return optuna.storages.JournalStorage(_backend_class(str(path), lock_obj=KernelJournalLock(str(path))))


def journal_storage(path: Path | str) -> optuna.storages.JournalStorage:
    """An Optuna journal-file storage at ``path`` locked with :class:`KernelJournalLock`, its
    incomplete lines repaired first (a message on the ``hessian_lr`` logger says so)."""
    path = Path(path)
    try:
        if path.is_file():
            lock = KernelJournalLock(str(path))
            with lock.held():
                torn = not _tail_is_whole(path)
                notice = _repair_locked(path) if torn else None
            if notice:
                log.warning(notice)
        try:
            return _open_journal(path)
        except (ValueError, KeyError, TypeError, AssertionError) as exc:  # a damaged line before the end
            notice = repair_journal(path)
            if notice is None:
                raise StorageError(f"cannot read the journal {path}: {exc}") from None
            log.warning(notice)
            return _open_journal(path)
    except (IsADirectoryError, NotADirectoryError, PermissionError, FileNotFoundError) as exc:
        raise StorageError(f"cannot use the journal {path}: {exc.strerror or exc}") from None


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be made in ``folder`` (or in the nearest existing folder above it, when
    it does not exist yet), or None if they can. Leaves nothing behind."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".hessian-lr-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot create files in {existing}: {exc.strerror or exc}"
    return None


def _check_journal(path: Path, must_exist: bool) -> None:
    if path.is_dir():
        raise StorageError(f"the journal {path} is a folder; name a file, e.g. {path / 'optuna.journal'}")
    if not path.exists():
        if must_exist:
            raise StorageError(f"no journal at {path}; give the --storage that compare used")
        problem = folder_problem(path.parent)
        if problem:
            raise StorageError(f"cannot create the journal {path}: {problem}")
        return
    if not path.is_file():
        raise StorageError(f"the journal {path} is not a regular file")
    try:
        with open(path, "r+b") as fh:
            first = fh.readline()
    except OSError as exc:
        raise StorageError(f"cannot open the journal {path} for writing: {exc.strerror or exc}") from None
    if first and first.endswith(b"\n") and not _is_journal_record(first):
        raise StorageError(f"{path} is not an Optuna journal (its first line is not a journal record); "
                           "name another file with --storage, or move this one aside")
    problem = folder_problem(path.parent)  # the lock file and repairs live beside the journal
    if problem:
        raise StorageError(f"cannot use the journal {path}: {problem}")


def _engine_kwargs(url: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    elif url.get_backend_name() == "mysql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def _check_database(spec: str) -> None:
    import sqlalchemy
    import sqlalchemy.exc

    shown = display_storage(spec)
    try:
        url = sqlalchemy.engine.make_url(spec)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"--storage {shown!r} is not a database URL; give a journal file path or a URL such as "
                           "sqlite:///x.db or postgresql+psycopg2://user@host:5432/db") from None
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise StorageError(f"--storage {shown}: an in-memory database would lose the studies; name a file")
        folder = Path(database).expanduser().parent
        if not folder.is_dir():
            raise StorageError(f"--storage {shown}: the folder {folder} does not exist")
        if Path(database).is_dir():
            raise StorageError(f"--storage {shown}: {database} is a folder, not a database file")
    try:
        engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageError(f"--storage {shown}: unknown kind of database {url.drivername!r}; give a journal file "
                           "path, sqlite:///FILE or postgresql+psycopg2://user@host:port/db") from None
    except ImportError as exc:
        driver = exc.name or str(exc)
        hint = ": pip install 'hessian-lr[postgres]'" if url.get_backend_name() == "postgresql" else ""
        raise StorageError(f"--storage {shown} needs the database driver {driver}, which is not installed{hint}") from None
    except (sqlalchemy.exc.ArgumentError, TypeError, ValueError) as exc:
        raise StorageError(f"--storage {shown}: {exc}") from None
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"cannot reach the storage {shown}: {optuna_api.root_message(exc)}") from None
    except ImportError as exc:
        raise StorageError(f"--storage {shown} needs the database driver {exc.name or exc}") from None
    finally:
        engine.dispose()


def check_storage(spec: str | None, out: Path, *, must_exist: bool = False) -> None:
    """Refuse a storage that cannot be used (:class:`StorageError`, naming it), creating
    nothing that lasts (a database's file aside: sqlite creates it when first connected).
    ``must_exist``: a journal must already be there (a worker joins an existing run)."""
    if is_url(spec):
        _check_database(spec)  # type: ignore[arg-type]
    else:
        _check_journal(Path(spec) if spec else Path(out) / "optuna.journal", must_exist)


def storage_for(spec: str | None, out: Path) -> BaseStorage:
    """An Optuna storage: ``None`` -> journal file ``out/optuna.journal``; a URL with ``://``
    (``sqlite:///...``, ``postgresql+psycopg2://...``) -> RDB storage with heartbeats, so trials of
    dead workers are detected and retried, and reconnection; anything else -> a journal file."""
    if is_url(spec):
        import sqlalchemy.engine
        import sqlalchemy.exc

        url = sqlalchemy.engine.make_url(spec)
        for attempt in range(3):
            try:
                return optuna_api.rdb_storage(spec, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, max_retry=3,
                                              retry_s=RETRY_S, display_url=display_storage(spec),  # type: ignore[arg-type]
                                              engine_kwargs=_engine_kwargs(url))
            except sqlalchemy.exc.IntegrityError:  # another process created the schema at the same moment
                if attempt == 2:
                    raise
                time.sleep(0.5)
            except Exception as exc:  # noqa: BLE001
                if optuna_api.is_connection_error(exc):
                    raise StorageLost(f"cannot reach the storage {display_storage(spec)}: "  # type: ignore[arg-type]
                                      f"{optuna_api.root_message(exc)}") from None
                raise
    path = Path(spec) if spec else Path(out) / "optuna.journal"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the folder of the journal {path}: {exc.strerror or exc}") from None
    return journal_storage(path)
