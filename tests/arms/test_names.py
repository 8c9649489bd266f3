"""The grammar of wrapped arm names: hessian-<arm>[-<estimator>], for every arm and estimator."""

from __future__ import annotations

import pytest

from hessian_lr.arms import ARMS
from hessian_lr.arms.names import (NORMALISES, REFERENCE_ESTIMATOR, WrappedName, estimator_arms, estimator_names,
                                   normalises, parse_wrapped, wrapped_name)
from hessian_lr.optim.estimators import ESTIMATORS

BASES = [*ARMS, "my_pkg.mod:MyOpt", "torch.optim:RMSprop", "pkg:namespace.Attr-with-hyphen"]


def test_the_estimators_are_the_registered_ones_with_grad_diff_the_reference():
    assert estimator_names() == tuple(ESTIMATORS) and estimator_names()[0] == REFERENCE_ESTIMATOR == "grad-diff"


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_every_base_and_estimator_round_trips(base, estimator):
    name = wrapped_name(base, estimator)
    assert parse_wrapped(name) == WrappedName(base, estimator)
    assert name == (f"hessian-{base}" if estimator == "grad-diff" else f"hessian-{base}-{estimator}")


@pytest.mark.parametrize("name, parsed", [
    ("hessian-adam", WrappedName("adam", "grad-diff")),
    ("hessian-adam-secant", WrappedName("adam", "secant")),
    ("hessian-adam-secant-rms", WrappedName("adam", "secant-rms")),  # the longest suffix wins
    ("hessian-sgd-squared-grad", WrappedName("sgd", "squared-grad")),
    ("hessian-schedulefree-adamw", WrappedName("schedulefree-adamw", "grad-diff")),  # hyphens stay in the base
    ("hessian-schedulefree-adamw-gauss-newton", WrappedName("schedulefree-adamw", "gauss-newton")),
    ("hessian-lion-gauss-newton", WrappedName("lion", "gauss-newton")),
    ("hessian-my_pkg.mod:MyOpt", WrappedName("my_pkg.mod:MyOpt", "grad-diff")),
    ("hessian-my_pkg.mod:MyOpt-secant", WrappedName("my_pkg.mod:MyOpt", "secant")),
    ("hessian-adam-foo", WrappedName("adam-foo", "grad-diff")),  # not an estimator: part of the base
    ("hessian-hessian-adam", WrappedName("hessian-adam", "grad-diff")),  # parsed; the registry refuses it
    ("hessian-secant", WrappedName("secant", "grad-diff")),  # a suffix needs a base before it
])
def test_names_parse_unambiguously(name, parsed):
    assert parse_wrapped(name) == parsed


@pytest.mark.parametrize("name", ["adam", "hessian-", "hessian", "hessianadam", "my_pkg:hessian-adam", ""])
def test_other_names_are_not_wrapped(name):
    assert parse_wrapped(name) is None


def test_estimator_arms_finds_one_bases_variants_only():
    arms = ["adam", "hessian-adam", "hessian-adam-secant", "hessian-adam-secant-rms", "hessian-adamw",
            "hessian-adamw-secant", "hessian-schedulefree-adamw", "hessian-schedulefree-adamw-hutchinson",
            "hessian-sgd-gauss-newton"]
    assert estimator_arms(arms, "adam") == {"hessian-adam-secant": "secant", "hessian-adam-secant-rms": "secant-rms"}
    assert estimator_arms(arms, "adamw") == {"hessian-adamw-secant": "secant"}
    assert estimator_arms(arms, "schedulefree-adamw") == {"hessian-schedulefree-adamw-hutchinson": "hutchinson"}
    assert estimator_arms(arms, "sgd") == {"hessian-sgd-gauss-newton": "gauss-newton"}
    assert estimator_arms(arms, "lion") == {}


def test_normalisation_classes():
    assert {name for name, value in NORMALISES.items() if value} >= {"adam", "adamw", "adabelief", "soap", "lion"}
    assert normalises("sgd") is False and normalises("muon") is False and normalises("adam") is True
    assert normalises("my_pkg.mod:MyOpt") is None
    assert set(NORMALISES) == set(ARMS)  # every registered arm is classified
