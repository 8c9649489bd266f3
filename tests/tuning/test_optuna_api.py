"""Every assumption hessian_lr.tuning.optuna_api makes about the installed Optuna, pinned: when an
Optuna release changes one of them, the test named after it fails (not a run, later, somewhere)."""

from __future__ import annotations

import json

import optuna
import pytest
import sqlalchemy.exc
from optuna.distributions import FloatDistribution
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hessian_lr.tuning import optuna_api as api
from hessian_lr.tuning.storage import journal_storage

LR = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}


@pytest.fixture
def study(tmp_path):
    return optuna.create_study(study_name="s", storage=journal_storage(tmp_path / "optuna.journal"))


def test_the_installed_optuna_is_one_this_adapter_supports():
    assert api.VERSION >= api.MIN_VERSION
    assert api.journal_file_backend() is JournalFileBackend


def test_private_attributes_exist(study):
    trial = study.ask()
    assert isinstance(api.storage_of(study), BaseStorage)
    assert isinstance(api.study_id(study), int) and isinstance(api.trial_id(trial), int)
    assert api.trial_id(study.trials[0]) == api.trial_id(trial)
    assert hasattr(study._thread_local, "cached_all_trials")  # what live_trial clears, as Study.ask does


def test_create_trial_writes_the_trial_and_its_attributes_in_one_operation(study, tmp_path):
    before = (tmp_path / "optuna.journal").read_bytes().count(b"\n")
    number = api.storage_of(study).get_trial(api.create_trial(study, {"owner": {"pid": 1}})).number
    lines = (tmp_path / "optuna.journal").read_bytes().splitlines()
    assert len(lines) == before + 1
    assert json.loads(lines[-1])["user_attrs"] == {"owner": {"pid": 1}}
    assert study.trials[number].state == TrialState.RUNNING and study.trials[number].user_attrs == {"owner": {"pid": 1}}


def test_pop_waiting_trial_takes_each_queued_trial_once(study):
    study.enqueue_trial({"lr": 1e-3})
    popped = api.pop_waiting_trial(study)
    assert popped is not None and api.storage_of(study).get_trial(popped).state == TrialState.RUNNING
    assert api.pop_waiting_trial(study) is None
    assert api.live_trial(study, popped).suggest_float("lr", 1e-4, 1e-1, log=True) == 1e-3  # the queued point


def test_a_live_trial_draws_what_ask_draws(tmp_path):
    """The deterministic resume rests on this: a trial drawn through live_trial with a sampler
    gets exactly the parameters Study.ask gives with an equal sampler and history."""
    def history(path):
        study = optuna.create_study(study_name="s", storage=journal_storage(path))
        for i in range(12):  # past TPE's 10 random start-up trials
            study.sampler = optuna.samplers.TPESampler(seed=i, constant_liar=True)
            trial = study.ask(LR)
            study.tell(trial, (trial.params["lr"] - 3e-3) ** 2)
        study.sampler = optuna.samplers.TPESampler(seed=99, constant_liar=True)
        return study

    asked = history(tmp_path / "a").ask(LR).params
    study = history(tmp_path / "b")
    live = api.live_trial(study, api.create_trial(study, {}))
    live.suggest_float("lr", 1e-4, 1e-1, log=True)
    assert live.params == asked


def test_the_journal_line_format_is_optunas(tmp_path):
    path = tmp_path / "plain.journal"
    entry = {api.JOURNAL_OP_KEY: 2, "worker_id": "w", "study_id": 0, "user_attr": {"a": [1, 2.5, None]}}
    JournalFileBackend(str(path)).append_logs([entry])
    assert path.read_bytes() == api.journal_line(entry)
    assert list(JournalFileBackend(str(path)).read_logs(0)) == [entry]


def test_optuna_skips_a_torn_last_line_and_stops_at_a_torn_line_followed_by_others(tmp_path):
    """What the journal repair is built on: readers never applied a torn line."""
    path = tmp_path / "j"
    good = api.journal_line({api.JOURNAL_OP_KEY: 2, "worker_id": "w", "study_id": 0, "user_attr": {"a": 1}})
    path.write_bytes(good + good[:10])
    assert list(JournalFileBackend(str(path)).read_logs(0)) == [json.loads(good)]
    path.write_bytes(good + good[:10] + good + good)
    with pytest.raises(ValueError):
        list(JournalFileBackend(str(path)).read_logs(0))


def test_rdb_storage_has_heartbeats_and_the_retry_callback(tmp_path):
    storage = api.rdb_storage(f"sqlite:///{tmp_path / 'x.db'}", heartbeat_interval=5, grace_period=20, max_retry=3,
                              retry_s=1, display_url="sqlite:///x.db")
    assert api.heartbeat_enabled(storage) and storage.get_heartbeat_interval() == 5
    callback = getattr(storage, "heartbeat_stale_trial_callback", None) or storage.failed_trial_callback  # < 4.9
    assert type(callback).__name__ in ("RetryHeartbeatStaleTrialCallback", "RetryFailedTrialCallback")
    assert callback._max_retry == 3
    study = optuna.create_study(study_name="s", storage=storage)
    api.record_heartbeat(api.storage_of(study), api.create_trial(study, {}))
    api.fail_stale_trials(study)  # nothing stale yet; the call exists and takes a study
    assert study.trials[0].state == TrialState.RUNNING


def test_every_database_method_is_retried_and_the_cache_layer_goes_through_them(tmp_path):
    rdb = optuna.storages.RDBStorage
    assert all(hasattr(rdb, name) for name in api._RDB_METHODS)
    abstract = set(BaseStorage.__abstractmethods__)
    assert abstract <= set(api._RDB_METHODS), abstract - set(api._RDB_METHODS)
    storage = api.rdb_storage(f"sqlite:///{tmp_path / 'x.db'}", heartbeat_interval=5, grace_period=20, max_retry=3,
                              retry_s=1, display_url="x")
    calls = []
    original = type(storage)._create_new_trial
    storage._create_new_trial = lambda *a, **k: (calls.append(1), original(storage, *a, **k))[1]
    study = optuna.create_study(study_name="s", storage=storage)  # wrapped in Optuna's cache layer
    api.create_trial(study, {})
    assert calls == [1]


def test_optuna_wraps_a_lost_connection_in_storage_internal_error_with_its_cause():
    from optuna.storages._rdb.storage import _create_scoped_session

    class LostSession:
        def commit(self):
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))

        def rollback(self):
            pass

        def close(self):
            pass

    with pytest.raises(optuna.exceptions.StorageInternalError) as caught:
        with _create_scoped_session(lambda: LostSession()):
            pass
    assert api.is_connection_error(caught.value)
    assert "server closed the connection" in api.root_message(caught.value)
    assert not api.is_connection_error(optuna.exceptions.StorageInternalError("invalid data"))
