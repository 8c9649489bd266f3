"""Workloads named by import path: a user's Workload object or factory (with options), and the
one-line errors for every kind of bad path."""

from __future__ import annotations

import sys

import pytest

from hessian_lr.workloads import Workload, get_workload
from hessian_lr.workloads.registry import _workload_from_path, workload_provenance

USER_MODULE = '''
from functools import partial

from hessian_lr.workloads import Workload
from hessian_lr.workloads.digits import digits_splits
from hessian_lr.workloads.mlp import mlp

CALLS = []


def tiny_digits(width=8, epochs=2):
    """Digits through a one-hidden-layer MLP of ``width`` units."""
    CALLS.append({"width": width, "epochs": epochs})
    return Workload(name="tiny-digits", description=f"digits, MLP 64-{width}-10", load_data=digits_splits,
                    build_model=partial(mlp, (64, width, 10)), batch_size=64, epochs=epochs)


fixed = tiny_digits(width=4)
not_a_workload = 3


def returns_junk():
    return "junk"


def fails():
    raise RuntimeError("no data here")
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``user_workloads`` importable from the current folder, as a user's file would be."""
    (tmp_path / "user_workloads.py").write_text(USER_MODULE)
    (tmp_path / "broken_workloads.py").write_text("import torch\nraise ImportError('half-installed')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    _workload_from_path.cache_clear()
    yield
    for name in ("user_workloads", "broken_workloads"):
        sys.modules.pop(name, None)
    _workload_from_path.cache_clear()


def test_a_factory_gets_its_options_and_equal_options_give_the_same_workload(user_module):
    workload = get_workload("user_workloads:tiny_digits", {"width": 16, "epochs": 3})
    assert isinstance(workload, Workload) and workload.epochs == 3
    assert workload.build_model()[0].out_features == 16
    again = get_workload("user_workloads:tiny_digits", {"epochs": 3, "width": 16})
    assert again is workload  # its data are loaded once per process
    import user_workloads

    assert user_workloads.CALLS[-1] == {"width": 16, "epochs": 3} and len(user_workloads.CALLS) == 2  # fixed + this


def test_a_workload_object_is_taken_as_it_is(user_module):
    workload = get_workload("user_workloads:fixed")
    assert workload.build_model()[0].out_features == 4
    import user_workloads

    assert workload is user_workloads.fixed


@pytest.mark.parametrize("path, options, message", [
    ("user_workloads", None, "unknown workload 'user_workloads'"),
    ("user_workloads:", None, "workload 'user_workloads:': an import path is 'package.module:name'"),
    ("no_such_module:w", None, "workload 'no_such_module:w': cannot import module 'no_such_module'"),
    ("broken_workloads:w", None, "workload 'broken_workloads:w': cannot import module 'broken_workloads': "
     "half-installed"),
    ("user_workloads:missing", None, "workload 'user_workloads:missing': module 'user_workloads' has no attribute "
     "'missing'"),
    ("user_workloads:not_a_workload", None, "workload 'user_workloads:not_a_workload' is a int, not a Workload"),
    ("user_workloads:returns_junk", None, "workload 'user_workloads:returns_junk': the factory returned a str, not "
     "a hessian_lr.workloads.Workload"),
    ("user_workloads:fails", None, "workload 'user_workloads:fails': the factory raised RuntimeError: no data here"),
    ("user_workloads:tiny_digits", {"depth": 3}, "workload 'user_workloads:tiny_digits': the factory cannot be "
     "called with the options {'depth': 3}"),
    ("user_workloads:fixed", {"width": 3}, "workload 'user_workloads:fixed' is a Workload object, which takes no "
     "options"),
    ("mnist1d-mlp", {"width": 3}, "workload 'mnist1d-mlp' takes no options, got width"),
])
def test_a_bad_workload_path_is_one_line_naming_it(user_module, path, options, message):
    with pytest.raises(ValueError) as caught:
        get_workload(path, options)
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_provenance_names_the_module_its_options_and_its_package(user_module):
    source = workload_provenance("user_workloads:tiny_digits", {"width": 16})
    assert source == {"source": "user_workloads:tiny_digits", "module": "user_workloads", "options": {"width": 16},
                      "packages": {"user_workloads": {"distribution": None, "version": None}}}
    builtin = workload_provenance("mnist1d-mlp")
    assert builtin["source"] == "registry" and builtin["packages"]["hessian_lr"]["distribution"] == "hessian-lr"
