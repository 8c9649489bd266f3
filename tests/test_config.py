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
    ("trials", 0, r"trials must be an integer in \[1, "),
    ("batch_trials", 1.5, r"batch_trials must be an integer in \[1, "),
    ("workers", -1, r"workers must be an integer in \[0, 256\]"),
    ("workers", 100_000_000, r"workers must be an integer in \[0, 256\]"),
    ("threads", 0, r"threads must be an integer in \[1, "),
    ("batch_trials", 1025, r"batch_trials must be an integer in \[1, 1024\]"),  # models held in memory at once
    ("seeds", 1001, r"seeds must be an integer in \[1, 1000\]"),
    ("studies", 0, r"studies must be an integer in \[1, "),
    ("seed", 2**32, r"seed must be an integer in \[0, "),
    ("seed", True, r"seed must be an integer"),
    ("ablation", "false", "ablation must be true or false"),
    ("batch_startup", "no", "batch_startup must be true or false"),
    ("lr_high", float("inf"), "lr_high must be a finite number > 0"),
    ("lr_low", float("nan"), "lr_low must be a finite number > 0"),
    ("space", "huge", "space must be one of default, wide"),
    ("optimizers", [1, 2], "optimizers must be names"),
    ("storage", 5, "storage must be a journal path"),
    ("out", "", "out must be a folder path"),
    ("spaces", {"sgd": {"lr": 0.1}}, "not among the optimizers"),
    ("lr_low", 0.2, "lr range must satisfy"),
    ("study", "a.b", "study must be a non-empty name"),
])
def test_bad_values_name_the_field(field, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        CompareConfig(**{field: value})


def test_spaces_resolve_per_arm_and_enter_the_study_fingerprint():
    from hessian_lr.tuning.space import Fixed, Float

    default = CompareConfig(optimizers=("adam", "hessian-adam", "prodigy"), lr_low=1e-3, lr_high=1e-2)
    assert dict(default.arm_spaces["adam"]) == {"lr": Float(1e-3, 1e-2, log=True)}
    assert dict(default.arm_spaces["prodigy"]) == {"lr": Fixed(1.0), "d_coef": Float(0.1, 10.0, log=True)}
    wide = CompareConfig(optimizers=("adam", "hessian-adam", "sgd"), space="wide")
    assert set(wide.arm_spaces["adam"]) == {"lr", "betas[0]", "betas[1]", "eps", "weight_decay"}
    assert set(wide.arm_spaces["hessian-adam"]) == {"lr", "betas[0]", "betas[1]", "eps", "weight_decay",
                                                    "curvature_beta", "curvature_eps"}
    assert set(wide.arm_spaces["sgd"]) == {"lr", "momentum", "weight_decay"}
    given = CompareConfig(spaces={"adam": {"lr": {"low": 1e-4, "high": 1e-1, "log": True},
                                           "eps": {"low": 1e-10, "high": 1e-6, "log": True}}})
    assert set(given.arm_spaces["adam"]) == {"lr", "eps"} and set(given.arm_spaces["hessian-adam"]) == {"lr"}
    assert given.study_fingerprint("adam") != default.study_fingerprint("adam")
    assert given.study_fingerprint("hessian-adam") == CompareConfig().study_fingerprint("hessian-adam")
    assert CompareConfig(**given.to_dict()).arm_spaces == given.arm_spaces  # workers rebuild it from a study


@pytest.mark.parametrize("table, fragment", [
    ({"lr": {"low": 0.1, "high": 0.01}}, "low must be < high"),
    ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
    ({"lr": {"low": "a", "high": 0.1}}, "low must be a number"),
    ({"lr": {"low": 1e-4, "high": 0.1, "log": "yes"}}, "log must be true or false"),
    ({"lr": {"low": 1, "high": 8, "type": "integer"}}, "type must be 'float' or 'int'"),
    ({"lr": {"choices": []}}, "choices must be a non-empty list"),
    ({"betas": {"low": 0.1, "high": 0.2}, "betas[1]": 0.9}, "as a whole and an item of it"),
    ({"b[x]": 1.0}, "must be an identifier"),
])
def test_bad_spaces_name_the_arm_and_the_hyperparameter(table, fragment):
    with pytest.raises(ValueError, match=r"space\.adam: .*" + fragment):
        CompareConfig(spaces={"adam": table})


def test_available_cores_follows_the_cpu_affinity():
    import os

    from hessian_lr.config import available_cores

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    assert available_cores() == len(os.sched_getaffinity(0)) <= (os.cpu_count() or 1)
