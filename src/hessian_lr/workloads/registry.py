"""The workload registry: every workload's data, model, loss, budget, reference and curvature route.

Descriptions give sizes and budgets; measured one-run times are in ``docs/workloads.md``
(``benchmarks/workloads.py`` measures them again).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import lru_cache, partial
from typing import Any

from hessian_lr.imports import import_object, is_import_path, module_of, package_versions
from hessian_lr.workloads import digits, quadratic, standard, teacher, transformer
from hessian_lr.workloads.base import Reference, Workload
from hessian_lr.workloads.convolution import Mnist1dCNN
from hessian_lr.workloads.data import mnist1d_splits
from hessian_lr.workloads.datadir import resolve_data_dir
from hessian_lr.workloads.mlp import mlp
from hessian_lr.workloads.sequence import BiGRUClassifier

__all__ = ["Workload", "Reference", "WORKLOADS", "DATA_WORKLOADS", "get_workload", "check_data", "workload_provenance",
           "register", "register_data_workload", "mlp", "Mnist1dCNN"]

WORKLOADS: dict[str, Workload] = {}
# Workloads that read a data set from disk (--data-dir, else $HESSIAN_LR_DATA; 'hessian-lr data download'
# fetches it), as factories taking keyword options (``size`` of the GPT). Resolved by name like the
# others, but not among WORKLOADS: the offline workloads that "all" and the default suite run.
DATA_WORKLOADS: dict[str, Callable[..., Workload]] = {}


def register(workload: Workload) -> Workload:
    """Add ``workload`` under its name (replacing any with that name) and return it."""
    WORKLOADS[workload.name] = workload
    return workload


def register_data_workload(name: str, factory: Callable[..., Workload]) -> None:
    """Add a workload read from disk: ``factory(data_dir=..., **options)`` builds it."""
    DATA_WORKLOADS[name] = factory


def get_workload(name: str, options: Mapping[str, Any] | None = None) -> Workload:
    """The workload called ``name``: a registered name, or an import path ``package.module:attr``
    of your own (the current folder is searched too, as ``python -m`` would) naming either a
    :class:`Workload` or a factory that takes keyword ``options`` and returns one. Equal names
    and options give the same object (its data are loaded once per process).

    Args:
        name: a registered name or an import path.
        options: keyword arguments of a factory (the ``[workload]`` table of a TOML config).

    Raises:
        ValueError: one line: an unknown name, a path that cannot be imported or names no
            workload, a factory that rejects the options or returns no workload, options for a
            workload that takes none.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a workload name must be a non-empty string, got {name!r}")
    options = dict(options or {})
    if is_import_path(name):
        return _workload_from_path(name, _options_json(name, options))
    if name in DATA_WORKLOADS:
        # the data folder is part of the key: the same name on other data is another workload
        return _data_workload(name, _options_json(name, options), str(resolve_data_dir()))
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(sorted(WORKLOADS))}, "
                         f"{', '.join(DATA_WORKLOADS)} (data from --data-dir), or give an import path "
                         "'package.module:name' of a Workload or a factory returning one")
    if options:
        raise ValueError(f"workload {name!r} takes no options, got {', '.join(sorted(options))}")
    return WORKLOADS[name]


def _options_json(name: str, options: Mapping[str, Any]) -> str:
    try:
        return json.dumps(options, sort_keys=True)
    except (TypeError, ValueError):
        raise ValueError(f"workload {name!r}: its options must be plain values (numbers, strings, lists, "
                         f"tables), got {options!r}") from None


@lru_cache(maxsize=None)
def _data_workload(name: str, options_json: str, data_dir: str) -> Workload:
    options = json.loads(options_json)
    try:
        return DATA_WORKLOADS[name](data_dir=data_dir, **options)
    except TypeError as exc:
        raise ValueError(f"workload {name!r} cannot take the options {options}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"workload {name!r}: {exc}") from None


def check_data(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Read a data workload's files now, so that a missing or corrupt data set is one line (a
    :class:`~hessian_lr.workloads.datadir.DatasetError` naming the file and the download command)
    before a run creates anything; nothing for the other workloads."""
    if name in DATA_WORKLOADS:
        get_workload(name, options).data  # noqa: B018 - loading is the check (and is cached for the run)


@lru_cache(maxsize=None)
def _workload_from_path(path: str, options_json: str) -> Workload:
    options = json.loads(options_json)
    target = import_object(path, "workload")
    if isinstance(target, Workload):
        if options:
            raise ValueError(f"workload {path!r} is a Workload object, which takes no options; got "
                             f"{', '.join(sorted(options))} (name a factory that takes them)")
        return target
    if not callable(target):
        raise ValueError(f"workload {path!r} is a {type(target).__name__}, not a Workload or a factory returning one")
    try:
        workload = target(**options)
    except TypeError as exc:
        given = f"the options {options}" if options else "no options"
        raise ValueError(f"workload {path!r}: the factory cannot be called with {given}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's factory failed
        raise ValueError(f"workload {path!r}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(workload, Workload):
        raise ValueError(f"workload {path!r}: the factory returned a {type(workload).__name__}, not a "
                         "hessian_lr.workloads.Workload")
    return workload


def workload_provenance(name: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Where a workload comes from, for results.json and the report: its ``source`` (the import
    path, or ``"registry"``), ``module``, ``options``, and the distribution and version of its
    top-level package (``None`` for a module in the current folder)."""
    if name in DATA_WORKLOADS:
        get_workload(name, options)
        return {"source": "registry", "module": __name__, "options": dict(options or {}),
                "data_dir": str(resolve_data_dir()), "packages": package_versions(["hessian_lr"])}
    if not is_import_path(name):
        get_workload(name)
        return {"source": "registry", "module": __name__, "options": {},
                "packages": package_versions(["hessian_lr"])}
    module = module_of(name)
    return {"source": name, "module": module, "options": dict(options or {}),
            "packages": package_versions([module.split(".")[0]])}


_MNIST1D = "Greydanus 2020, mnist1d README (https://github.com/greydanus/mnist1d): Adam lr 1e-2, batch 100, 6,000 steps"

register(
    Workload(
        name="mnist1d-mlp",
        description="mnist1d (3,500 train / 500 val / 1,000 test), MLP 40-100-100-10, ReLU, cross-entropy; "
        "15,210 parameters; 20 epochs of 35 steps",
        load_data=mnist1d_splits,
        build_model=partial(mlp, (40, 100, 100, 10)),
        reference=Reference(
            metric="test_accuracy", value=0.68, tolerance=0.06, source=_MNIST1D + " (the paper's MLP has a "
            "residual second layer; this one is plain)",
            check="tests/workloads/test_references.py::test_mnist1d_mlp_and_cnn_reach_the_paper_accuracy (slow)"),
    )
)

register(
    Workload(
        name="mnist1d-cnn",
        description="mnist1d, the mnist1d paper's CNN (3 strided conv1d layers, 25 channels, then linear 125-10), "
        "cross-entropy; 5,210 parameters; 15 epochs of 35 steps",
        load_data=mnist1d_splits,
        build_model=Mnist1dCNN,
        epochs=15,
        reference=Reference(
            metric="test_accuracy", value=0.94, tolerance=0.04, source=_MNIST1D,
            check="tests/workloads/test_references.py::test_mnist1d_mlp_and_cnn_reach_the_paper_accuracy (slow)"),
    )
)

register(
    Workload(
        name="mnist1d-deep-mlp",
        description="mnist1d, deep narrow MLP 40-64x8-10 (8 hidden ReLU layers, no normalisation): curvature "
        "differs by orders of magnitude between layers; 32,394 parameters; 20 epochs of 35 steps",
        load_data=mnist1d_splits,
        build_model=partial(mlp, (40,) + (64,) * 8 + (10,)),
    )
)

register(
    Workload(
        name="mnist1d-gru",
        description="mnist1d, the mnist1d paper's bidirectional GRU (6 units per direction, all 40 hidden states "
        "-> linear 480-10), cross-entropy; 5,134 parameters; 5 epochs of 35 steps (the paper trains 6,000 steps)",
        load_data=mnist1d_splits,
        build_model=BiGRUClassifier,
        epochs=5,
        curvature="hvp",
        reference=Reference(
            metric="test_accuracy", value=0.91, tolerance=0.05, source=_MNIST1D + "; the paper's protocol (4,000 "
            "training rows in order), not this workload's budget",
            check="tests/workloads/test_references.py::test_gru_reaches_the_paper_accuracy_with_its_protocol (slow)"),
    )
)

def _quadratic(name: str, rotated: bool, description: str) -> Workload:
    """The noisy quadratic (``rotated=False``) or its rotated twin: same spectrum, noise and budget."""
    return Workload(
        name=name,
        description=description,
        load_data=partial(quadratic.quadratic_splits, rotated=rotated),
        build_model=partial(quadratic.build_quadratic, rotated=rotated),
        loss_fn=quadratic.mean_row_loss,
        batch_size=quadratic.BATCH_SIZE,
        epochs=quadratic.EPOCHS,
        task="regression",
        curvature="closed-form",
        reference=quadratic.REFERENCE,
    )


register(_quadratic(
    "noisy-quadratic", rotated=False,
    description="noisy quadratic model (Zhang et al. 2019): d=100, H = diag(10/i), per-row loss ½θᵀHθ + ξᵀθ "
    "over 1,000 noise rows with mean 0 and covariance exactly H (minibatch noise H/B), validation/test "
    "loss ½θᵀHθ; 100 parameters; batch 10, 10 epochs = 1,000 steps"))

register(_quadratic(
    "rotated-quadratic", rotated=True,
    description="the noisy quadratic under a fixed random rotation, H = Q diag(10/i) Qᵀ (as DeepOBS's "
    "quadratic_deep): same spectrum and SGD dynamics, but diag(H) no longer describes the curvature; "
    "100 parameters; batch 10, 10 epochs = 1,000 steps"))

register(
    Workload(
        name="digits-softmax",
        description="multinomial logistic regression on scikit-learn's bundled 8x8 digits (1,197 train / 300 val / "
        "300 test, standardised), linear 64-10, cross-entropy + (1e-3/2)·‖θ‖² (convex); 650 parameters; "
        "batch 64, 40 epochs of 19 steps",
        load_data=digits.digits_splits,
        build_model=digits.build_digits_model,
        batch_size=64,
        epochs=40,
        l2=digits.L2,
        reference=digits.REFERENCE,
    )
)

register(
    Workload(
        name="teacher-student",
        description="regression onto a fixed random ReLU teacher 16-32-32-4 (x ~ N(0, I), noise σ = 0.1; 4,000 "
        "train / 1,000 val / 1,000 test), student ReLU MLP 16-64-64-4, mean squared error; 5,508 parameters; "
        "batch 100, 20 epochs of 40 steps",
        load_data=teacher.teacher_splits,
        build_model=teacher.build_student,
        loss_fn=teacher.mse,
        task="regression",
        reference=teacher.REFERENCE,
    )
)

register(
    Workload(
        name="modular-addition-transformer",
        description="(a + b) mod 31 from the tokens 'a b =' (768 train / 96 val / 97 test pairs), one-layer "
        "pre-LN transformer (width 32, 4 heads, GELU MLP 128, LayerNorm), cross-entropy; 14,911 parameters; "
        "batch 64, 60 epochs of 12 steps",
        load_data=transformer.modular_addition_splits,
        build_model=transformer.TinyTransformer,
        batch_size=64,
        epochs=60,
        curvature="hvp",
        reference=transformer.REFERENCE,
    )
)

# read from disk (docs/workloads.md): AlgoPerf's CIFAR-10 workload, DeepOBS' 3c3d on CIFAR-10, nanoGPT's
# shakespeare_char (option size="cpu": its README's CPU configuration, also registered by its own name)
register_data_workload("cifar10-resnet18", standard.cifar10_resnet18)
register_data_workload("cifar10-3c3d", standard.cifar10_3c3d)
register_data_workload("shakespeare-char-gpt", standard.shakespeare_char_gpt)
register_data_workload("shakespeare-char-gpt-cpu", partial(standard.shakespeare_char_gpt, size="cpu"))
