"""CompareConfig: validation and automatic placement (processes, intra-op threads, lanes)."""

from __future__ import annotations

import pytest

from hessian_lr import config as config_module
from hessian_lr.config import CompareConfig


@pytest.fixture
def cores(monkeypatch):
    def set_cores(n: int) -> None:
        monkeypatch.setattr(config_module, "available_cores", lambda: n)

    return set_cores


def test_sequential_default_is_one_single_threaded_process_per_arm(cores):
    cores(2)
    config = CompareConfig()
    assert (config.batched, config.workers, config.threads, config.lanes) == (False, 2, 1, 1)
    cores(1)
    assert (CompareConfig().workers, CompareConfig().threads) == (1, 1)


def test_batched_arms_share_one_process_in_lanes(cores):
    cores(2)
    config = CompareConfig(batch_trials=10)
    assert (config.batched, config.workers, config.threads, config.lanes) == (True, 1, 1, 2)
    cores(8)  # more cores than arms: the spare ones become intra-op threads
    config = CompareConfig(batch_trials=10)
    assert (config.workers, config.threads, config.lanes) == (1, 4, 2)
    one_arm = CompareConfig(batch_trials=10, optimizers=("adam",))
    assert (one_arm.workers, one_arm.threads, one_arm.lanes) == (1, 8, 1)


def test_explicit_threads_and_workers_decide_the_lanes(cores):
    cores(2)
    assert CompareConfig(batch_trials=10, threads=2).lanes == 1
    assert CompareConfig(batch_trials=10, workers=2).lanes == 1  # processes instead of lanes
    assert CompareConfig(batch_trials=10, workers=2).threads == 1


def test_arms_that_cannot_batch_keep_the_sequential_placement(cores):
    cores(2)
    config = CompareConfig(batch_trials=10, optimizers=("adam", "hessian-adam-hutchinson"))
    assert (config.batched, config.workers, config.threads, config.lanes) == (False, 2, 1, 1)


@pytest.mark.parametrize("field, value, fragment", [
    ("trials", 0, "trials must be a positive integer"),
    ("batch_trials", 1.5, "batch_trials must be a positive integer"),
    ("workers", -1, "workers must be >= 0"),
    ("threads", 0, "threads must be a positive integer"),
    ("lr_low", 0.2, "lr range must satisfy"),
    ("study", "a.b", "study must be a non-empty name"),
])
def test_bad_values_name_the_field(field, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        CompareConfig(**{field: value})


def test_available_cores_follows_the_cpu_affinity():
    import os

    from hessian_lr.config import available_cores

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    assert available_cores() == len(os.sched_getaffinity(0)) <= (os.cpu_count() or 1)
