"""The journal file: a torn last line or a torn line glued to later appends is repaired when the
journal is opened (the original kept aside, nothing that finished lost); worse damage, or a file
that is no journal, is refused with a message naming it; an append that fails (a full disk) cuts
the file back to its last whole line."""

from __future__ import annotations

import logging
import subprocess
import sys

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

from hessian_lr.tuning.storage import JournalWriteError, StorageError, check_storage, journal_storage


def _journal(path, trials=3):
    storage = journal_storage(path)
    study = optuna.create_study(study_name="s", storage=storage)
    for i in range(trials):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        study.tell(trial, float(i))
    return path.read_bytes()


def _values(path):
    study = optuna.load_study(study_name="s", storage=journal_storage(path))
    return [(t.number, t.state.name, t.value) for t in study.trials]


def test_a_torn_last_line_is_cut_and_the_original_kept(tmp_path, caplog):
    path = tmp_path / "optuna.journal"
    whole = _journal(path)
    lines = whole.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="hessian_lr"):
        values = _values(path)
    assert values == [(0, "COMPLETE", 0.0), (1, "COMPLETE", 1.0), (2, "RUNNING", None)]  # the torn tell is gone
    assert path.read_bytes() == b"".join(lines[:-1])
    [backup] = tmp_path.glob("optuna.journal.damaged-*")
    assert backup.read_bytes().startswith(b"".join(lines[:-1])) and not backup.read_bytes().endswith(b"\n")
    assert "dropped a half-written last line" in caplog.text and backup.name in caplog.text


def test_a_torn_line_glued_to_a_later_append_is_dropped_as_if_deleted_by_hand(tmp_path):
    """The failure every later run hit: a torn line, then another process's append on the same
    line ("Expecting ',' delimiter"). Repairing it gives what deleting that line by hand gives."""
    path = tmp_path / "optuna.journal"
    whole = _journal(path)
    lines = whole.splitlines(keepends=True)
    torn = b"".join(lines[:-1]) + lines[-1][:40]
    path.write_bytes(torn)
    plain = optuna.storages.JournalStorage(JournalFileBackend(str(path)))  # an Optuna without the repair
    study = optuna.load_study(study_name="s", storage=plain)
    study.set_user_attr("later", 1)  # glued onto the torn line
    with pytest.raises(ValueError, match="Expecting"):
        study.set_user_attr("later", 2)  # the next line: from now on every reader stops at the glued one
    with pytest.raises(ValueError, match="Expecting"):
        optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))
    lines.append(path.read_bytes().splitlines(keepends=True)[-1])  # "later" = 2, written before the error
    by_hand = tmp_path / "by-hand.journal"
    by_hand.write_bytes(b"".join(lines[:-2]) + lines[-1])  # the glued line deleted
    assert _values(path) == _values(by_hand)
    assert path.read_bytes() == by_hand.read_bytes()
    assert len(list(tmp_path.glob("optuna.journal.damaged-*"))) == 1


def test_more_damage_than_a_torn_append_is_refused_with_the_file_and_the_fix(tmp_path):
    path = tmp_path / "optuna.journal"
    lines = _journal(path, trials=4).splitlines(keepends=True)
    path.write_bytes(b"".join(line if i not in (3, 5, 7) else b"{garbage\n" for i, line in enumerate(lines)))
    with pytest.raises(StorageError, match=r"optuna.journal is damaged on 3 lines \(the first is line 4\).*restore it "
                                           r"from a copy, or move it aside"):
        journal_storage(path)
    assert not list(tmp_path.glob("*.damaged-*"))  # nothing touched


def test_a_file_that_is_no_journal_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\nmore notes\n")
    with pytest.raises(StorageError, match="is not an Optuna journal"):
        check_storage(str(path), tmp_path)
    with pytest.raises(StorageError, match="is not an Optuna journal"):
        journal_storage(path)
    assert path.read_text() == "my notes\nmore notes\n"


FULL_DISK = """
import resource, sys
import optuna
from hessian_lr.tuning.storage import JournalWriteError, journal_storage
path = sys.argv[1]
study = optuna.load_study(study_name="s", storage=journal_storage(path))
size = len(open(path, "rb").read())
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, size + 20))  # room for 20 bytes: a full disk
try:
    study.set_user_attr("big", "x" * 1000)
except JournalWriteError as exc:
    print(exc)
"""


def test_an_append_that_fails_leaves_no_torn_line(tmp_path):
    path = tmp_path / "optuna.journal"
    whole = _journal(path)
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"cannot write the journal {path}: File too large"
    assert path.read_bytes() == whole  # the 20 bytes that fit were cut back
