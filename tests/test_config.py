"""CompareConfig: validation and automatic placement (processes, intra-op threads, lanes)."""

from __future__ import annotations

import pytest
import torch

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


HUTCH10 = {"base": "adam", "estimator": "hutchinson", "update_every": 10, "n_samples": 2}


def test_an_arms_table_declares_a_wrapped_arm_with_estimator_options(tmp_path):
    from hessian_lr.arms import EstimatorStep, provenance
    from hessian_lr.config import load_toml

    path = tmp_path / "c.toml"
    path.write_text('optimizers = "adam,hutch10,mine"\n[arms.hutch10]\nbase = "adam"\nestimator = "hutchinson"\n'
                    'update_every = 10\nn_samples = 2\n[arms.mine]\nbase = "lion"\n')
    data = load_toml(path)
    assert data["arms"] == {"hutch10": HUTCH10, "mine": {"base": "lion"}}
    config = CompareConfig(**data, space="wide")
    assert config.arms == {"hutch10": HUTCH10, "mine": {"base": "lion", "estimator": "grad-diff"}}
    arm = config.arm("hutch10")
    assert arm.name == "hutch10" and isinstance(arm.step, EstimatorStep) and arm is config.arm("hutch10")
    optimizer = arm.build([torch.nn.Parameter(torch.zeros(3))], lr=1e-3)
    assert (optimizer.estimator.update_every, optimizer.estimator.n_samples) == (10, 2)
    assert arm.description.startswith("HessianLRAdaptation(Adam (fused), default betas/eps), hutchinson estimator, "
                                      "update_every=10, n_samples=2")
    assert provenance(arm)["wraps"] == {"base": "adam", "source": "torch.optim", "estimator": "hutchinson",
                                        "options": {"update_every": 10, "n_samples": 2}}
    assert {"curvature_beta", "curvature_eps"} <= set(config.arm_spaces["mine"])  # the wide preset tunes them
    assert config.arm("mine").normalises is True and config.arm("mine").wraps.base.name == "lion"
    # the stored config (results.json, a study's attrs read by `hessian-lr worker`) rebuilds the same arms
    again = CompareConfig(**config.to_dict())
    assert again.arms == config.arms and again.study_fingerprint("hutch10") == config.study_fingerprint("hutch10")
    assert config.to_dict()["arms"]["hutch10"] == HUTCH10 and "arms" not in CompareConfig().to_dict()
    other = CompareConfig(optimizers=["adam", "hutch10"], arms={"hutch10": {**HUTCH10, "update_every": 5}})
    assert other.study_fingerprint("hutch10") != config.study_fingerprint("hutch10")  # other options: other trials
    assert other.study_fingerprint("adam") == CompareConfig().study_fingerprint("adam")  # undeclared arms: as before


@pytest.mark.parametrize("arms, fragment", [
    ({"x": {"estimator": "secant"}}, r"arms\.x: base must be an arm name or import path \(a string\), got None"),
    ({"x": {"base": 3}}, r"arms\.x: base must be an arm name or import path"),
    ({"x": "adam"}, r"arms\.x must be a table with base"),
    ({"x": {"base": "adam", "estimator": "oracle"}}, r"arms\.x: estimator must be one of grad-diff, squared-grad, "),
    ({"x": {"base": "adam", "estimator": "hutchinson", "n_sample": 2}},
     r"arms\.x: unknown key 'n_sample'; it takes base, estimator and the hutchinson estimator's options "
     r"\(update_every, min_curvature, spatial_average, n_samples\)"),
    ({"x": {"base": "adam", "update_every": 10}}, r"arms\.x: unknown key 'update_every'; .* grad-diff estimator's "
                                                  r"options \(none\)"),
    ({"x": {"base": "adam", "curvature_beta": 0.9}}, r"arms\.x: unknown key 'curvature_beta'.*go in a \[space\.x\] "
                                                     r"table"),
    ({"x": {"base": "adam", "estimator": "hutchinson", "update_every": 0}},
     r"arms\.x: update_every must be an int >= 1, got 0"),
    ({"x": {"base": "adam", "estimator": "hutchinson", "update_every": 2.5}},
     r"arms\.x: update_every must be an integer \(default 1\), got 2\.5"),
    ({"x": {"base": "adam", "estimator": "secant", "min_curvature": True}}, r"arms\.x: min_curvature must be a number"),
    ({"x": {"base": "adam", "estimator": "secant", "min_curvature": -1.0}}, r"arms\.x: min_curvature must be >= 0"),
    ({"x": {"base": "adahessian"}}, r"arms\.x: optimizer 'x': adahessian's step differentiates p\.grad"),
    ({"x": {"base": "hessian-adam"}}, r"arms\.x: optimizer 'x': hessian-adam is already wrapped"),
    ({"x": {"base": "nope"}}, r"unknown optimizer 'nope'"),
    ({"x": {"base": "adam"}, "y": {"base": "x"}}, r"arms\.y: its base x is declared by \[arms\.x\]"),
    ({"hessian-adam": {"base": "adam"}}, r"arms\.hessian-adam: 'hessian-adam' already names an arm"),
    ({"a:b": {"base": "adam"}}, r"arms\.a:b: an arm's name is letters, digits and _\.\+- \(no ':' or ','\)"),
    ("adam", r"arms must be a table of \[arms\.NAME\] tables"),
])
def test_bad_arms_tables_name_the_table_and_the_key(arms, fragment):
    names = ["adam", *(arms if isinstance(arms, dict) else [])]
    with pytest.raises(ValueError, match=fragment) as info:
        CompareConfig(optimizers=names, arms=arms)
    assert "\n" not in str(info.value)


def test_a_declared_arm_must_be_run_and_the_wrapped_name_of_one_is_refused():
    with pytest.raises(ValueError, match=r"arms\.hutch10 is declared but not among the optimizers \(adam\)"):
        CompareConfig(optimizers=["adam"], arms={"hutch10": HUTCH10})
    with pytest.raises(ValueError, match=r"optimizer 'hessian-hutch10': hutch10 \(an \[arms\.hutch10\] table\) is "
                                         "already wrapped"):
        CompareConfig(optimizers=["hutch10", "hessian-hutch10"], arms={"hutch10": HUTCH10})


def test_a_suite_takes_arms_tables_for_every_workload(tmp_path):
    from hessian_lr.pipeline.suite import SuiteConfig

    suite = SuiteConfig(workloads=("mnist1d-mlp", "noisy-quadratic"), optimizers=("adam", "hutch10"),
                        arms={"hutch10": HUTCH10}, out=tmp_path)
    assert all(suite.compare_config(w).arms == {"hutch10": HUTCH10} for w in suite.workloads)
    assert suite.to_dict()["arms"] == {"hutch10": HUTCH10}
    with pytest.raises(ValueError, match=r"arms\.hutch10: unknown key 'n_sample'"):
        SuiteConfig(workloads=("mnist1d-mlp",), optimizers=("adam", "hutch10"),
                    arms={"hutch10": {**HUTCH10, "n_sample": 1}}, out=tmp_path)
