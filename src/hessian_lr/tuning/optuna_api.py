"""Every use of Optuna beyond its documented public API, in one place.

hessian-lr needs a few things Optuna keeps private: a study's storage and id, a trial's id,
creating a trial with attributes in one storage write, building a ``Trial`` for a trial that
already exists, the heartbeat helpers, and the journal file's line format. Each is wrapped here
once; the rest of the package calls these functions, and ``tests/tuning/test_optuna_api.py``
pins every assumption they make about the installed Optuna, so an Optuna release that changes
one of them fails that test by name instead of failing a run.

Versions: Optuna >= 4.0 (``optuna.storages.journal.JournalFileBackend``). Optuna 4.9 renamed
``RetryFailedTrialCallback`` to ``RetryHeartbeatStaleTrialCallback`` and ``RDBStorage``'s
``failed_trial_callback`` to ``heartbeat_stale_trial_callback`` (the old names go in 6.0);
:func:`rdb_storage` uses whichever the installed version has.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hessian_lr import events

__all__ = ["VERSION", "storage_of", "study_id", "trial_id", "heartbeat_enabled", "record_heartbeat",
           "fail_stale_trials", "retry_callback", "rdb_storage", "journal_line", "JOURNAL_OP_KEY",
           "create_trial", "pop_waiting_trial", "live_trial", "StorageLost", "quiet_optuna",
           "journal_file_backend", "is_connection_error", "root_message", "is_update_finished"]

VERSION = tuple(int(part) for part in optuna.__version__.split(".")[:2])
MIN_VERSION = (4, 0)
JOURNAL_OP_KEY = "op_code"  # every journal line is a JSON object with this key

if VERSION < MIN_VERSION:  # pragma: no cover - pyproject.toml asks for >= 4.0
    raise ImportError(f"hessian-lr needs optuna >= {'.'.join(map(str, MIN_VERSION))}, found {optuna.__version__}")


def quiet_optuna() -> None:
    """Optuna's logging and warnings shown only when they matter: its log at ERROR (a trial that
    fails is reported by hessian-lr itself), and no warnings about experimental features this
    package uses knowingly (heartbeats, the retry callback) or deprecations it has handled."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"optuna(\.|$)")


# -- private attributes -------------------------------------------------------------------------------

_UPDATE_FINISHED = getattr(optuna.exceptions, "UpdateFinishedTrialError", None)  # Optuna >= 4.2


def is_update_finished(exc: BaseException) -> bool:
    """Whether ``exc`` says the trial was already finished (by another process): Optuna's
    ``UpdateFinishedTrialError``, a plain ``RuntimeError`` with that message before 4.2."""
    if _UPDATE_FINISHED is not None:
        return isinstance(exc, _UPDATE_FINISHED)
    return type(exc) is RuntimeError and "has already finished and can not be updated" in str(exc)


def storage_of(study: optuna.Study) -> BaseStorage:
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return trial._trial_id


# -- heartbeats ---------------------------------------------------------------------------------------

def heartbeat_enabled(storage: BaseStorage) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def record_heartbeat(storage: BaseStorage, trial: int) -> None:
    storage.record_heartbeat(trial)  # type: ignore[attr-defined] - BaseHeartbeat's method


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials whose worker stopped sending heartbeats (and queue their retries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def retry_callback(max_retry: int) -> Any:
    """The callback that queues a stale trial again, under its name in the installed Optuna."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
            optuna.storages.RetryFailedTrialCallback
        return cls(max_retry=max_retry)


def _callback_keyword() -> str:
    parameters = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    return "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in parameters \
        else "failed_trial_callback"


# -- RDB storages that survive a database restart ------------------------------------------------------

class StorageLost(RuntimeError):
    """The storage stayed unreachable past the retry deadline; the message names it."""


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it: Optuna wraps SQLAlchemy's errors in its
    ``StorageInternalError`` with a message about invalid data) is a lost or refused database
    connection rather than a real error of the operation."""
    import sqlalchemy.exc

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, sqlalchemy.exc.TimeoutError):  # the pool's wait for a connection
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def root_message(exc: BaseException) -> str:
    """The innermost cause's message on one line (without SQLAlchemy's link to its docs)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(getattr(exc, "orig", None) or exc)
    return " ".join(text.split("(Background on this error")[0].split())


# Methods of RDBStorage that talk to the database (the public BaseStorage ones, the heartbeat
# ones, and _create_new_trial, which Optuna's cache layer calls instead of create_new_trial).
_RDB_METHODS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "_create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials", "get_best_trial",
    "record_heartbeat", "_get_stale_trial_ids", "get_all_versions", "get_current_version", "get_head_version",
)


def _retrying(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.retry_s
        delay = 0.2
        retried = False
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - only connection errors are retried
                if is_update_finished(exc) and retried and name == "set_trial_state_values":
                    # A state change whose commit went through although its reply was lost: the
                    # retry finds the trial finished — in the state that was asked for.
                    state = kwargs.get("state", args[1] if len(args) > 1 else None)
                    if self.get_trial(args[0]).state == state:
                        return True
                if not is_connection_error(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StorageLost(f"lost the connection to the storage {self.display_url}: {root_message(exc)}; "
                                      "run the same command again to resume") from None
                if not retried:
                    events.announce("storage-retry", name)
                retried = True
                try:
                    self.engine.dispose()  # drop pooled connections to the server that went away
                except Exception:  # noqa: BLE001
                    pass
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


_reconnecting_class: type | None = None


def _reconnecting_rdb_class() -> type:
    """``RDBStorage`` whose every database call is retried while the connection is down (a
    server restart), up to ``retry_s`` seconds, then raises :class:`StorageLost`."""
    global _reconnecting_class
    if _reconnecting_class is None:
        namespace: dict[str, Any] = {"retry_s": 60.0, "display_url": "the database"}
        for name in _RDB_METHODS:
            method = getattr(optuna.storages.RDBStorage, name, None)
            if method is not None:
                namespace[name] = _retrying(name, method)
        _reconnecting_class = type("ReconnectingRDBStorage", (optuna.storages.RDBStorage,), namespace)
    return _reconnecting_class


def rdb_storage(url: str, *, heartbeat_interval: int, grace_period: int, max_retry: int, retry_s: float,
                display_url: str, engine_kwargs: dict[str, Any] | None = None) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats, stale trials queued again (up to ``max_retry`` times), and
    reconnection: every call is retried for ``retry_s`` seconds while the database is unreachable."""
    cls = _reconnecting_rdb_class()
    kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
              _callback_keyword(): retry_callback(max_retry)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        deadline = time.monotonic() + retry_s
        while True:
            try:
                storage = cls(url, engine_kwargs=engine_kwargs, **kwargs)
                break
            except Exception as exc:  # noqa: BLE001 - the schema check at start-up is one more call
                if not is_connection_error(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    storage.retry_s = retry_s
    storage.display_url = display_url
    return storage


# -- journal files ------------------------------------------------------------------------------------

def journal_file_backend() -> type:
    from optuna.storages.journal import JournalFileBackend

    return JournalFileBackend


def journal_line(log: dict[str, Any]) -> bytes:
    """One operation as ``JournalFileBackend.append_logs`` writes it (and ``read_logs`` reads it)."""
    return (json.dumps(log, separators=(",", ":")) + "\n").encode("utf-8")


# -- trials -------------------------------------------------------------------------------------------

def create_trial(study: optuna.Study, user_attrs: dict[str, Any]) -> int:
    """A new RUNNING trial carrying ``user_attrs`` from its first storage write (so a kill can
    never leave it without them); returns its id."""
    template = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=dict(user_attrs))
    return storage_of(study).create_new_trial(study_id(study), template_trial=template)


def pop_waiting_trial(study: optuna.Study) -> int | None:
    """Take a queued (WAITING) trial, as ``Study.ask`` does: the storage's state change decides
    between processes racing for it. Returns its id, or None if none is left."""
    storage = storage_of(study)
    for trial in storage.get_all_trials(study_id(study), deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(trial_id(trial), state=TrialState.RUNNING):
                return trial_id(trial)
        except Exception as exc:  # noqa: BLE001 - another process finished it meanwhile
            if not is_update_finished(exc):
                raise
    return None


def live_trial(study: optuna.Study, trial: int) -> optuna.Trial:
    """A ``Trial`` for an existing RUNNING trial, to draw its parameters with ``study.sampler`` —
    exactly what ``Study.ask`` builds after creating one (with the study's per-thread trial cache
    cleared first, as ``ask`` does, so the sampler sees the current history)."""
    study._thread_local.cached_all_trials = None
    return optuna.Trial(study, trial)
