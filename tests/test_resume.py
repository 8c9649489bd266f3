"""Kill-safe resume for real: SIGKILL (or Ctrl-C) a compare run at an event it announced, run the
same command again, and get exactly what an uninterrupted run gives (sequential seeded mode, a
multi-hyperparameter space, batched arms in lanes), with no finished work redone.

Every kill point is an event the run announces and is held at (tests/announced.py): the process
stands exactly there when the signal comes, however loaded the machine is."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import optuna
import pytest
from announced import Announced, run_ok
from results_helpers import without_timing

from hessian_lr.tuning.storage import journal_storage

TRIALS, SEEDS, EPOCHS = 4, 3, 4
ARGS = ["--optimizers", "adam", "--trials", str(TRIALS), "--epochs", str(EPOCHS), "--seeds", str(SEEDS),
        "--workers", "1", "--no-batch-startup", "--quiet"]  # the plain sequential, bit-reproducible mode
INTERRUPTED = "hessian-lr: interrupted; run the same command again to resume"


def compare_args(out: Path, args=ARGS) -> list[str]:
    return ["compare", "--out", str(out), *args]


def all_trials(out: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    journal = out / "optuna.journal"
    if not journal.exists():
        return {}
    storage = journal_storage(journal)
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).trials
            for s in optuna.get_all_study_summaries(storage)}


def study_trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    studies = all_trials(out)
    assert len(studies) <= 1
    return next(iter(studies.values()), [])


def completed(trials):
    return {t.number: t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE}


def comparable(out: Path) -> dict:
    return without_timing(json.loads((out / "results.json").read_text()))


def kill_at(out: Path, event: str, args=ARGS) -> Announced:
    """Run until ``event`` (held there), SIGKILL it."""
    with Announced(compare_args(out, args), hold=[event]) as run:
        wait_for_held(run, event)
        run.kill()
    return run


def wait_for_held(run: Announced, event: str) -> None:
    pattern, _, nth = event.partition("#")
    run.wait_for(pattern, int(nth or 1))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference")
    run_ok(compare_args(out))
    return comparable(out)


@pytest.mark.parametrize("kill_point, event", [
    ("trial-boundary", "trial-told *#2"),  # the second trial just told
    ("mid-trial", f"epoch adam#{EPOCHS + 2}"),  # the second trial's second epoch
    ("inside-ask", "trial-asking *#3"),  # the third trial created, its lr not drawn yet
])
def test_killed_during_tuning_resumes_to_the_uninterrupted_result(reference, tmp_path, kill_point, event):
    out = tmp_path / "run"
    kill_at(out, event)
    before = completed(study_trials(out))
    assert len(before) == (2 if kill_point != "mid-trial" else 1)
    if kill_point == "inside-ask":
        assert "lr" not in study_trials(out)[-1].params
    run_ok(compare_args(out))
    after = study_trials(out)
    assert {n: v for n, v in completed(after).items() if n in before} == before  # nothing lost or redone
    assert len(completed(after)) == TRIALS and [t.number for t in after] == list(range(TRIALS))
    assert comparable(out) == reference


def test_killed_during_the_finals_reuses_finished_runs(reference, tmp_path):
    out = tmp_path / "run"
    kill_at(out, "final-saved *#1")
    kept = {p: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert len(kept) == 1
    assert not list(out.glob("results.json"))  # never half-written: absent until the end
    run_ok(compare_args(out))
    assert all(p.read_bytes() == data for p, data in kept.items())
    assert len(list((out / "runs").glob("*.json"))) == SEEDS
    assert comparable(out) == reference


def test_a_journal_torn_mid_line_is_repaired_and_the_rerun_gives_the_uninterrupted_result(reference, tmp_path):
    """Killed after two trials, the journal then cut in the middle of its last line (a copy
    truncated, a write torn): the rerun repairs it (the original kept aside, a warning line)
    and ends exactly where an uninterrupted run ends."""
    out = tmp_path / "run"
    kill_at(out, "trial-told *#2")
    journal = out / "optuna.journal"
    data = journal.read_bytes()
    journal.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 40])
    err = run_ok(compare_args(out))
    assert err.startswith("hessian-lr: warning: repaired the journal") and err.count("\n") == 1, err
    assert comparable(out) == reference
    assert len(list(out.glob("optuna.journal.damaged-*"))) == 1


def test_a_full_disk_while_the_journal_is_written_is_one_line_and_loses_nothing(reference, tmp_path):
    """A write of the journal that fails (here: the process may not grow a file past the
    journal's size + 100 bytes) ends the run with one line naming the journal, exit 1, and the
    journal cut back to its last whole line: the same command, with room again, ends exactly as
    an uninterrupted run."""
    out = tmp_path / "run"
    kill_at(out, "trial-told *#1")
    size = (out / "optuna.journal").stat().st_size
    with Announced(compare_args(out), file_size_limit=size + 100) as run:
        code = run.finish()
        err = run.stderr()
    assert code == 1 and err.strip() == f"hessian-lr: error: cannot write the journal {out / 'optuna.journal'}: " \
                                        "File too large", err
    assert (out / "optuna.journal").read_bytes().endswith(b"\n")
    run_ok(compare_args(out))
    assert comparable(out) == reference


def test_a_corrupt_run_file_is_moved_aside_and_trained_again(reference, tmp_path):
    out = tmp_path / "run"
    run_ok(compare_args(out))
    victim = sorted((out / "runs").glob("*.json"))[1]
    victim.write_text(victim.read_text()[:50])  # torn by something else
    (out / "results.json").unlink()
    run_ok(compare_args(out))
    assert (victim.parent / (victim.name + ".corrupt")).exists() and victim.exists()
    assert comparable(out) == reference


SPACE_TOML = ('[space.adam]\nlr = { low = 1e-4, high = 1e-1, log = true }\n'
              'eps = { low = 1e-10, high = 1e-6, log = true }\n')


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> tuple[list[str], dict]:
    folder = tmp_path_factory.mktemp("wide")
    (folder / "space.toml").write_text(SPACE_TOML)
    args = [*ARGS, "--config", str(folder / "space.toml")]
    run_ok(compare_args(folder / "reference", args))
    return args, comparable(folder / "reference")


@pytest.mark.parametrize("event", ["param-drawn * 2 lr", f"epoch adam#{2 * EPOCHS + 1}"])
def test_a_two_hyperparameter_space_resumes_bit_identically(wide, tmp_path, event):
    """[space.adam] with lr and eps from a TOML config: killed between a trial's two parameters
    (lr stored, eps not), or mid-trial, the rerun gives the uninterrupted run's results exactly."""
    args, reference = wide
    out = tmp_path / "run"
    kill_at(out, event, args)
    trials = study_trials(out)
    if event.startswith("param-drawn"):
        assert set(trials[-1].params) == {"lr"}
    run_ok(compare_args(out, args))
    data = comparable(out)
    assert data == reference
    assert set(data["optimizers"]["adam"]["best_params"]) == {"lr", "eps"}


BATCHED_ARGS = ["--optimizers", "adam,hessian-adam", "--trials", str(TRIALS), "--epochs", str(EPOCHS),
                "--seeds", "2", "--batch-trials", "2", "--threads", "1", "--workers", "1", "--quiet"]


@pytest.fixture(scope="module")
def batched_reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("batched")
    run_ok(compare_args(out, BATCHED_ARGS))
    return comparable(out)


def test_batched_lanes_killed_mid_batch_resume_to_the_uninterrupted_result(batched_reference, tmp_path):
    """Both arms train at once in threads, each its batch of TPE's start-up trials; SIGKILL while
    both batches train (both lanes held right after handing their batch to training), run the
    same command again: every study ends with exactly its budget and the same numbers as a run
    never interrupted (each batch is trained again as the same batch)."""
    out = tmp_path / "run"
    with Announced(compare_args(out, BATCHED_ARGS), hold=["batch-started *"]) as run:
        run.wait_for("batch-started *", 2)
        run.kill()
    studies = all_trials(out)
    assert len(studies) == 2 and all(
        len(trials) == TRIALS and all(t.state == optuna.trial.TrialState.RUNNING and "lr" in t.params for t in trials)
        for trials in studies.values())
    run_ok(compare_args(out, BATCHED_ARGS))
    for trials in all_trials(out).values():
        assert [t.number for t in trials] == list(range(TRIALS))
        assert len(completed(trials)) == TRIALS
    assert comparable(out) == batched_reference


def finish_interrupted(run: Announced) -> None:
    code = run.finish(timeout=120)
    err = run.stderr()
    assert code == 130, err
    assert err.strip() == INTERRUPTED, err


def test_ctrl_c_during_batched_lanes_stops_cleanly_and_resumes(batched_reference, tmp_path):
    """SIGINT while both lanes hold their batch: the other lane stops at its next epoch and is
    joined, the command exits 130 with its one line (no C++ abort from a thread left inside
    torch), and the same command then finishes the budget with the uninterrupted numbers."""
    out = tmp_path / "run"
    with Announced(compare_args(out, BATCHED_ARGS), hold=["batch-started *"]) as run:
        run.wait_for("batch-started *", 2)
        run.interrupt()
        finish_interrupted(run)
    run_ok(compare_args(out, BATCHED_ARGS))
    for trials in all_trials(out).values():
        assert len(completed(trials)) == TRIALS
    assert comparable(out) == batched_reference


def test_ctrl_c_twice_while_waiting_for_the_other_lane(tmp_path):
    """Two SIGINTs while this thread waits to join the other lane: the second is only counted,
    the join completes, exit 130 with one line."""
    out = tmp_path / "run"
    with Announced(compare_args(out, BATCHED_ARGS), hold=["lanes-joining"]) as run:
        run.wait_for("lanes-joining")
        run.interrupt()
        run.interrupt()
        finish_interrupted(run)  # the one line, nothing else


def sigint_blocked_or_ignored(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        fields = dict(line.split(":", 1) for line in fh if ":" in line)
    bit = 1 << (signal.SIGINT - 1)
    return bool(int(fields["SigBlk"], 16) & bit or int(fields["SigIgn"], 16) & bit)


def test_ctrl_c_at_the_terminal_with_worker_processes_is_one_line(tmp_path):
    """Ctrl-C at a terminal reaches the whole process group: the workers never see it (they start
    with SIGINT blocked and then ignore it), this process ends them, exit 130 with one line and
    no worker traceback; the rerun finishes."""
    out = tmp_path / "run"
    args = ["--optimizers", "adam,hessian-adam", "--trials", str(TRIALS), "--epochs", str(EPOCHS), "--seeds", "1",
            "--no-ablation", "--workers", "2", "--no-batch-startup", "--quiet"]
    with Announced(compare_args(out, args), hold=["batch-started *"], new_session=True) as run:
        run.wait_for("batch-started *")
        workers = [pid for pid in run.children() if "spawn_main" in open(f"/proc/{pid}/cmdline").read()]
        assert workers and all(sigint_blocked_or_ignored(pid) for pid in workers)
        run.interrupt_group()
        finish_interrupted(run)
    run_ok(compare_args(out, args))
    assert len(json.loads((out / "results.json").read_text())["optimizers"]) == 2


@pytest.mark.parametrize("event, hold", [
    ("cli-start", False),  # lands while torch and the registries are imported
    ("cli-start", True),  # before the first import
    ("trial-told *#1", True),  # between two trials
    ("outputs-written *", True),  # everything written, the command not yet returned
])
def test_ctrl_c_at_any_moment_is_exit_130_and_one_line(tmp_path, event, hold):
    out = tmp_path / "run"
    with Announced(compare_args(out), hold=[event] if hold else []) as run:
        wait_for_held(run, event)
        run.interrupt()
        finish_interrupted(run)
    if event.startswith("outputs"):
        assert (out / "results.json").exists()
