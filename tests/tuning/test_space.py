"""Search spaces: dimensions, TOML tables, tuple items, the wide preset, JSON and Optuna."""

from __future__ import annotations

import json
import math
import re
import tomllib

import pytest

from hessian_lr.arms import get_arm
from hessian_lr.tuning.space import (DEFAULT_LR, WIDE_RANGES, Categorical, Fixed, Float, Int, SearchSpace,
                                     assemble_hyperparameters, space_from_toml, split_name, wide_space)


def toml_space(text: str, arm: str = "adam") -> SearchSpace:
    table = tomllib.loads(text)["space"][arm]
    return space_from_toml(table, f"space.{arm}")


# -- TOML ------------------------------------------------------------------------------------------

def test_toml_table_of_every_kind():
    space = toml_space("""
        [space.adam]
        lr = { low = 1e-4, high = 1e-1, log = true }
        "betas[1]" = { low = 0.9, high = 0.9999 }
        momentum = { low = 0, high = 1 }
        n_steps = { low = 1, high = 8, type = "int" }
        width = { low = 2, high = 64, type = "int", log = true }
        amsgrad = { choices = [false, true] }
        kind = { choices = ["a", "b", 3] }
        weight_decay = 0.0
        eps = { value = 1e-8 }
        name = "fixed-string"
        flag = true
    """)
    assert dict(space) == {
        "lr": Float(1e-4, 1e-1, log=True),
        "betas[1]": Float(0.9, 0.9999, log=False),
        "momentum": Float(0.0, 1.0),
        "n_steps": Int(1, 8),
        "width": Int(2, 64, log=True),
        "amsgrad": Categorical((False, True)),
        "kind": Categorical(("a", "b", 3)),
        "weight_decay": Fixed(0.0),
        "eps": Fixed(1e-8),
        "name": Fixed("fixed-string"),
        "flag": Fixed(True),
    }
    assert list(space) == ["lr", "betas[1]", "momentum", "n_steps", "width", "amsgrad", "kind", "weight_decay",
                           "eps", "name", "flag"]  # the table's order
    assert isinstance(space["momentum"].low, float) and isinstance(space["n_steps"].low, int)
    assert space.tuned == ("lr", "betas[1]", "momentum", "n_steps", "width", "amsgrad", "kind")
    assert space.fixed == {"weight_decay": 0.0, "eps": 1e-8, "name": "fixed-string", "flag": True}


@pytest.mark.parametrize(("entry", "message"), [
    ("lr = { low = 1e-1, high = 1e-4 }", "low must be < high"),
    ("lr = { low = 1e-3, high = 1e-3 }", "low must be < high"),
    ("n = { low = 5, high = 5, type = 'int' }", "low must be < high"),
    ("lr = { low = 0.0, high = 1e-1, log = true }", "log scale needs low > 0"),
    ("lr = { low = -1.0, high = 1e-1, log = true }", "log scale needs low > 0"),
    ("n = { low = 0, high = 8, type = 'int', log = true }", "log scale needs low > 0"),
    ("lr = { low = 1e-4, high = inf }", "must be finite"),
    ("lr = { low = nan, high = 1.0 }", "must be finite"),
    ("lr = { low = -inf, high = 1.0, log = false }", "must be finite"),
    ("eps = nan", "must be finite"),
    ("eps = { value = inf }", "must be finite"),
    ("c = { choices = [1.0, nan] }", "must be finite"),
    ("lr = { low = '1e-4', high = 1e-1 }", "must be a number"),
    ("lr = { low = 1e-4, high = '0.1' }", "must be a number"),
    ("lr = { low = true, high = 2.0 }", "must be a number"),
    ("n = { low = 1.5, high = 8, type = 'int' }", "must be an integer"),
    ("n = { low = 1, high = '8', type = 'int' }", "must be an integer"),
    ("lr = { low = 1e-4, high = 1e-1, log = 'yes' }", "log must be true or false"),
    ("lr = { low = 1e-4, high = 1e-1, type = 'double' }", "type must be 'float' or 'int'"),
    ("lr = { low = 1e-4, high = 1e-1, step = 2 }", "a range needs 'low' and 'high'"),
    ("lr = { low = 1e-4 }", "a range needs 'low' and 'high'"),
    ("lr = { lo = 1e-4, hi = 1e-1 }", "a range needs 'low' and 'high'"),
    ("lr = { value = 1e-3, low = 1e-4 }", "a range needs 'low' and 'high'"),
    ("lr = {}", "a range needs 'low' and 'high'"),
    ("amsgrad = { choices = 'ab' }", "choices must be a list"),
    ("amsgrad = { choices = [] }", "choices must be a non-empty list"),
    ("amsgrad = { choices = [true, true] }", "choices must be distinct"),
    ("amsgrad = { choices = [[1, 2]] }", "a choice must be a bool, number or string"),
    ("amsgrad = { choices = [{ a = 1 }] }", "a choice must be a bool, number or string"),
    ("betas = [0.9, 0.99]", "expected a value or a table"),
    ("when = 1979-05-27", "a fixed value must be a bool, number or string"),
    ("'betas[x]' = 0.9", "must be an identifier or identifier[index]"),
    ("'2lr' = 0.1", "must be an identifier or identifier[index]"),
    ("betas = { value = 0.9 }\n'betas[1]' = { low = 0.9, high = 0.99 }", "sets 'betas' as a whole and an item"),
])
def test_toml_errors_name_the_table_and_the_hyperparameter(entry, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        toml_space(f"[space.adam]\n{entry}\n")
    text = str(info.value)
    assert text.startswith("space.adam: ")
    name = entry.split("=")[0].strip().strip("'\"")
    assert name in text, text


def test_toml_table_must_be_a_nonempty_table():
    with pytest.raises(ValueError, match="space.adam must be a table"):
        space_from_toml(1e-3, "space.adam")
    with pytest.raises(ValueError, match="space.adam: a search space needs at least one hyperparameter"):
        space_from_toml({}, "space.adam")


def test_an_item_and_another_item_of_the_same_tuple_are_fine():
    space = toml_space("[space.adam]\n'betas[0]' = 0.8\n'betas[1]' = { low = 0.9, high = 0.999 }\n")
    assert space.fixed == {"betas[0]": 0.8} and space.tuned == ("betas[1]",)


# -- dimensions and spaces built in code ---------------------------------------------------------

@pytest.mark.parametrize(("dimension", "message"), [
    (Float(1.0, 1.0), "low must be < high"),
    (Float(0.0, 1.0, log=True), "log scale needs low > 0"),
    (Float(float("nan"), 1.0), "must be finite"),
    (Float("a", 1.0), "must be a number"),
    (Int(1, 8.0), "must be an integer"),
    (Int(True, 8), "must be an integer"),
    (Categorical([1, 2]), "choices must be a non-empty list"),  # a list, not a tuple
    (Categorical(()), "choices must be a non-empty list"),
    (Categorical((1, (2, 3))), "a choice must be"),
    (Fixed([1, 2]), "a fixed value must be a bool, number or string"),
    (Fixed(float("inf")), "a fixed value must be finite"),
    (1e-3, "expected a Float, Int, Categorical or Fixed dimension"),
])
def test_dimensions_are_validated_when_a_space_is_made(dimension, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace({"lr": dimension})


def test_names_and_items():
    assert split_name("lr") == ("lr", None)
    assert split_name("betas[1]") == ("betas", 1)
    assert split_name("adamw_betas[12]") == ("adamw_betas", 12)
    for bad in ("betas[-1]", "betas[]", "betas[1][0]", "be tas", "", 3, "lr "):
        with pytest.raises(ValueError, match="must be an identifier"):
            split_name(bad)
    with pytest.raises(ValueError, match="at least one"):
        SearchSpace({})
    with pytest.raises(ValueError, match="sets 'betas' as a whole and an item"):
        SearchSpace({"betas[0]": Fixed(0.9), "betas": Fixed(0.5)})


def test_corners_replace_and_equality():
    space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "n": Int(1, 8), "amsgrad": Categorical((False, None, True)),
                         "eps": Fixed(1e-8)})
    assert space.corners() == [{"lr": 1e-4, "n": 1, "amsgrad": False, "eps": 1e-8},
                               {"lr": 1e-1, "n": 8, "amsgrad": True, "eps": 1e-8}]
    wider = space.replace(lr=Float(1e-5, 1.0, log=True))
    assert wider["lr"] == Float(1e-5, 1.0, log=True) and space["lr"] == Float(1e-4, 1e-1, log=True)
    assert list(wider) == list(space)
    assert space != wider and space == SearchSpace(dict(space)) and space != dict(space)
    with pytest.raises(TypeError):
        space["lr"] = Fixed(1.0)  # type: ignore[index]


# -- tuple items -------------------------------------------------------------------------------

def test_assemble_hyperparameters_fills_tuple_items_from_the_defaults():
    defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "triple": [1, 2, 3]}
    assert assemble_hyperparameters({"lr": 1e-2, "betas[1]": 0.99}, defaults) == {"lr": 1e-2, "betas": (0.9, 0.99)}
    assert assemble_hyperparameters({"betas[1]": 0.95, "betas[0]": 0.8}, defaults) == {"betas": (0.8, 0.95)}
    assert assemble_hyperparameters({"triple[2]": 7}, defaults) == {"triple": (1, 2, 7)}  # a list default too
    assert assemble_hyperparameters({"betas": (0.5, 0.6)}, defaults) == {"betas": (0.5, 0.6)}
    assert assemble_hyperparameters({}, defaults) == {}
    assert defaults["betas"] == (0.9, 0.999)  # untouched
    with pytest.raises(ValueError, match=r"betas\[2\]: 'betas' has 2 items \(indices 0..1\)"):
        assemble_hyperparameters({"betas[2]": 0.9}, defaults)
    with pytest.raises(ValueError, match=r"eps\[0\]: the optimizer declares no tuple default for 'eps'"):
        assemble_hyperparameters({"eps[0]": 0.9}, defaults)
    with pytest.raises(ValueError, match="no tuple default for 'momentum'"):
        assemble_hyperparameters({"momentum[0]": 0.9}, defaults)


# -- the wide preset -------------------------------------------------------------------------------

def wide(name: str) -> SearchSpace:
    arm = get_arm(name)
    return wide_space(arm.space, arm.defaults)


def test_wide_space_of_adam_sgd_and_hessian_adam():
    assert get_arm("adam").space == SearchSpace({"lr": DEFAULT_LR})
    adam = wide("adam")
    assert list(adam) == ["lr", "betas[0]", "betas[1]", "eps", "weight_decay"]  # no amsgrad (a bool)
    assert all(adam[name] == WIDE_RANGES[name] for name in adam)
    assert list(wide("sgd")) == ["lr", "momentum", "weight_decay"]  # SGD has no betas or eps
    assert list(wide("hessian-adam")) == ["lr", "betas[0]", "betas[1]", "eps", "weight_decay", "curvature_beta",
                                          "curvature_eps"]
    assert list(wide("hessian-sgd")) == ["lr", "momentum", "weight_decay", "curvature_beta", "curvature_eps"]


def test_wide_space_keeps_a_fixed_lr_and_the_arms_own_dimensions():
    prodigy = wide("prodigy")
    assert prodigy["lr"] == Fixed(1.0) and prodigy["d_coef"] == Float(0.1, 10.0, log=True)
    assert {"betas[0]", "betas[1]", "eps", "weight_decay"} <= set(prodigy)
    assert "lr" not in prodigy.tuned
    muon = wide("muon")  # Muon's betas and eps are adamw_betas/adamw_eps: not Adam's
    assert list(muon) == ["lr", "momentum", "weight_decay"]


def test_wide_space_skips_tuple_items_the_default_does_not_have():
    space = wide_space(SearchSpace({"lr": DEFAULT_LR}), {"lr": 1e-3, "betas": (0.9,), "eps": None, "momentum": True})
    assert list(space) == ["lr", "betas[0]", "eps"]  # betas[1] missing from the default, momentum a bool
    own = wide_space(SearchSpace({"lr": DEFAULT_LR, "eps": Fixed(1e-3)}), {"lr": 1e-3, "eps": 1e-8})
    assert own["eps"] == Fixed(1e-3)  # a fixed value of the arm stays


@pytest.mark.parametrize("name", ["adam", "sgd", "hessian-adam", "prodigy", "muon", "adabelief"])
def test_wide_spaces_fit_their_optimizers(name):
    import torch

    from hessian_lr.arms import check_space

    check_space(get_arm(name), wide(name), [torch.zeros(4, 3), torch.zeros(4)])


# -- JSON, fingerprints, Optuna -------------------------------------------------------------------

SPACE = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "betas[1]": Float(0.9, 0.9999), "n": Int(1, 8, log=True),
                     "amsgrad": Categorical((False, True)), "kind": Categorical(("x", 2, 0.5, None)),
                     "eps": Fixed(1e-8), "name": Fixed("x")})


def test_json_round_trip():
    data = json.loads(json.dumps(SPACE.to_json()))
    again = SearchSpace.from_json(data)
    assert again == SPACE and dict(again) == dict(SPACE) and list(again) == list(SPACE)
    assert again.fingerprint() == SPACE.fingerprint() and hash(again) == hash(SPACE)
    assert SPACE.to_json()["lr"] == {"type": "float", "low": 1e-4, "high": 0.1, "log": True}
    assert SPACE.to_json()["n"] == {"type": "int", "low": 1, "high": 8, "log": True}
    assert SPACE.to_json()["kind"] == {"type": "categorical", "choices": ["x", 2, 0.5, None]}
    assert SPACE.to_json()["eps"] == {"type": "fixed", "value": 1e-8}
    with pytest.raises(ValueError, match="n: unknown dimension type 'integer'"):
        SearchSpace.from_json({"n": {"type": "integer", "low": 1, "high": 2}})
    with pytest.raises(ValueError, match="low must be < high"):
        SearchSpace.from_json({"lr": {"type": "float", "low": 1.0, "high": 0.1}})


def test_fingerprint_is_stable_and_tells_spaces_apart():
    # Stored studies are found by this text: a change to it orphans every stored study.
    assert SearchSpace({"lr": DEFAULT_LR}).fingerprint() == \
        '{"lr": {"high": 0.1, "log": true, "low": 0.0001, "type": "float"}}'
    reordered = SearchSpace(dict(reversed(list(SPACE.items()))))
    assert reordered.fingerprint() == SPACE.fingerprint()
    assert SearchSpace({"lr": Float(1, 10)}).fingerprint() == SearchSpace({"lr": Float(1.0, 10.0)}).fingerprint()
    others = [SPACE.replace(lr=Float(1e-4, 1e-1)), SPACE.replace(eps=Fixed(1e-7)), SPACE.replace(n=Int(1, 9, log=True)),
              SPACE.replace(amsgrad=Categorical((True, False))), SearchSpace({"lr": DEFAULT_LR})]
    prints = {s.fingerprint() for s in others} | {SPACE.fingerprint()}
    assert len(prints) == len(others) + 1


def test_optuna_distributions_of_the_tuned_dimensions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distributions = SPACE.distributions()
    assert list(distributions) == ["lr", "betas[1]", "n", "amsgrad", "kind"] == list(SPACE.tuned)
    assert distributions["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert distributions["betas[1]"] == FloatDistribution(0.9, 0.9999, log=False)
    assert distributions["n"] == IntDistribution(1, 8, log=True)
    assert distributions["amsgrad"] == CategoricalDistribution((False, True))
    assert distributions["kind"] == CategoricalDistribution(("x", 2, 0.5, None))
    assert isinstance(distributions["lr"].low, float) and not math.isnan(distributions["lr"].high)
    assert SearchSpace({"lr": Fixed(1.0)}).distributions() == {}


def test_optuna_samples_inside_the_space():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask(SPACE.distributions())
        point = {**trial.params, **SPACE.fixed}
        assert set(point) == set(SPACE)
        assert 1e-4 <= point["lr"] <= 1e-1 and 0.9 <= point["betas[1]"] <= 0.9999 and 1 <= point["n"] <= 8
        assert isinstance(point["n"], int) and point["amsgrad"] in (False, True) and point["eps"] == 1e-8
        study.tell(trial, 0.0)
    kwargs = assemble_hyperparameters(point, get_arm("adam").defaults)
    assert kwargs["betas"] == (0.9, point["betas[1]"])
