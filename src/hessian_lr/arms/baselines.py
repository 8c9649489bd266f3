"""Peer optimizers from the ``pytorch-optimizer`` package (the ``baselines`` extra), as arms.

The package is imported when an arm is built, so the core works without it; naming such an arm
without the package is a one-line error before any training. Every arm keeps the package's
defaults except where said; by default only the lr is tuned, like every other arm.

The 2019–2021 methods: AdaBelief, AdaHessian, SophiaH, ApolloDQN, DiffGrad, Adan. Today's
strongest peers, with the special calls their authors prescribe:

* ``soap`` — SOAP (Vyas et al. 2024, arXiv:2409.11321): Adam in Shampoo's eigenbasis.
* ``muon`` — Muon (Jordan et al. 2024): Newton–Schulz-orthogonalised momentum on the ≥ 2-D
  weight matrices, AdamW (the package's ``adamw_*`` defaults) on every other tensor, as its
  authors prescribe (the package's ``use_muon`` group flag). The AdamW part's lr keeps the
  package defaults' ratio to Muon's (3e-4 : 0.02), so tuning the lr tunes both parts.
* ``schedulefree-adamw`` — Schedule-Free AdamW (Defazio et al. 2024, arXiv:2405.15682; the
  AlgoPerf 2024 self-tuning winner): ``optimizer.train()`` before training steps,
  ``optimizer.eval()`` before every evaluation (it evaluates an average of the iterates).
* ``shampoo`` — Shampoo (Gupta et al. 2018; Distributed Shampoo won AlgoPerf 2024's external
  tuning track), the package's ``Shampoo`` with its defaults.
* ``kron`` — PSGD Kron (Li 2018; Kron preconditioner), package defaults.
* ``lion`` — Lion (Chen et al. 2023, arXiv:2302.06675), package defaults.
* ``prodigy`` — Prodigy (Mishchenko & Defazio 2023, arXiv:2306.06101), learning-rate free: its
  lr stays 1.0 (the authors' advice), and its default space tunes ``d_coef`` — the factor on its
  estimated step size that the authors name as the preferred knob — log-uniform in [0.1, 10].

AdaHessian and SophiaH compute a Hutchinson Hessian-vector product inside ``step()`` from
``p.grad``, so the backward before a Hessian refresh keeps its graph (:class:`GraphStep`):
every step for AdaHessian, every 10th step (the package's ``update_period``) for SophiaH.
ApolloDQN keeps its default warm-up: lr rises linearly from 1e-5 over its first 500 steps (14 of
mnist1d-mlp's 20 epochs); its early losses in the report reflect this.

Every one of them can be wrapped by name (``hessian-lion``, ``hessian-soap-secant``; see
:mod:`hessian_lr.arms.wrapping`) except AdaHessian and SophiaH, whose step differentiates the
gradient that the wrapper rescales.

pytorch-optimizer ≥ 4.0 is required: in 3.x AdaHessian's "Rademacher" probe was always −1 (its
estimate row sums of H, not the diagonal), and 4.0 changed DiffGrad and SOAP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from hessian_lr.arms.base import PLAIN, Arm, GraphStep, ScheduleFreeStep, TrainStep, signature_defaults
from hessian_lr.arms.builtin import IMPLEMENTATION_ARGS
from hessian_lr.arms.names import normalises
from hessian_lr.tuning.space import Fixed, Float, SearchSpace

__all__ = ["BASELINE_ARMS", "PACKAGE", "DISTRIBUTION"]

PACKAGE = "pytorch_optimizer"
DISTRIBUTION = "pytorch-optimizer"


def _optimizer_class(class_name: str) -> type[Optimizer]:
    try:
        import pytorch_optimizer
    except ImportError:
        raise ValueError(f"{class_name} needs the {DISTRIBUTION} package: pip install 'hessian-lr[baselines]'") from None
    return getattr(pytorch_optimizer, class_name)


def _package_factory(class_name: str, **fixed: Any) -> Callable[..., Optimizer]:
    def build(params: Iterable[Tensor], **hyperparameters: Any) -> Optimizer:
        return _optimizer_class(class_name)(params, **{**fixed, **hyperparameters})

    build.__name__ = build.__qualname__ = class_name
    return build


# The package's defaults: Muon lr 0.02, AdamW part lr 3e-4. The arm keeps that ratio when its lr
# is tuned, so one lr sets both parts (the AdamW part is not left at 3e-4 whatever Muon's lr is).
MUON_ADAMW_LR_RATIO = 3e-4 / 0.02


def _muon(params: Iterable[Tensor], **hyperparameters: Any) -> Optimizer:
    """Muon on the ≥ 2-D tensors, the package's AdamW on the others (empty groups left out); the
    AdamW part's lr is ``MUON_ADAMW_LR_RATIO`` × the lr unless ``adamw_lr`` is given."""
    params = list(params)
    if "lr" in hyperparameters and "adamw_lr" not in hyperparameters:
        hyperparameters["adamw_lr"] = MUON_ADAMW_LR_RATIO * hyperparameters["lr"]
    groups = [{"params": [p for p in params if p.ndim >= 2], "use_muon": True},
              {"params": [p for p in params if p.ndim < 2], "use_muon": False}]
    return _optimizer_class("Muon")([g for g in groups if g["params"]], **hyperparameters)


class _ClassDefaults(Mapping[str, Any]):
    """The class's constructor defaults (its signature, without implementation switches) and the
    arm's fixed values, read on first use: building the registry must not import the package
    (~0.3 s), which most runs never need. Empty when the package is not installed (the arm is
    then refused by name before training)."""

    def __init__(self, class_name: str, fixed: Mapping[str, Any]) -> None:
        self._class_name, self._fixed = class_name, dict(fixed)
        self._values: dict[str, Any] | None = None

    def _resolved(self) -> dict[str, Any]:
        if self._values is None:
            try:
                cls = _optimizer_class(self._class_name)
                found = {k: v for k, v in signature_defaults(cls.__init__, skip=2).items()
                         if k not in IMPLEMENTATION_ARGS}
            except ValueError:
                found = {}
            self._values = {**found, **self._fixed}
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._resolved()[key]

    def __iter__(self):  # noqa: ANN204
        return iter(self._resolved())

    def __len__(self) -> int:
        return len(self._resolved())

    def __repr__(self) -> str:
        return f"defaults of pytorch_optimizer.{self._class_name}"


def _arm(name: str, class_name: str, description: str, *, build: Callable[..., Optimizer] | None = None,
         step: TrainStep = PLAIN, space: SearchSpace | None = None, relative_cost: float = 1.0,
         fixed: Mapping[str, Any] | None = None, stackable: bool | None = None,
         also_requires: tuple[str, ...] = ()) -> Arm:
    fixed = dict(fixed or {})
    options = {"step": step, "relative_cost": relative_cost, "stackable": stackable}
    if space is not None:
        options["space"] = space
    return Arm(name, build or _package_factory(class_name, **fixed),
               description=f"pytorch_optimizer.{class_name}, {description}",
               defaults=_ClassDefaults(class_name, fixed), requires=(PACKAGE, *also_requires),
               source=f"{PACKAGE}.{class_name}", normalises=normalises(name), **options)


BASELINE_ARMS: list[Arm] = [
    _arm("adabelief", "AdaBelief", "package defaults"),
    _arm("adahessian", "AdaHessian", "package defaults (Hutchinson Hessian every step, 1 Rademacher probe)",
         step=GraphStep(every=1), relative_cost=2.4),
    _arm("sophiah", "SophiaH", "package defaults (Hutchinson Hessian every 10 steps, 1 Gaussian probe, clip p=0.01)",
         step=GraphStep(every=10)),
    _arm("apollo", "ApolloDQN", "package defaults (lr warm-up from 1e-5 over 500 steps)", relative_cost=1.35),
    _arm("diffgrad", "DiffGrad", "package defaults"),
    _arm("adan", "Adan", "package defaults"),
    _arm("soap", "SOAP", "package defaults (betas (0.95, 0.95), weight_decay 0.01, preconditioner every 10 steps)",
         relative_cost=3.0),
    _arm("muon", "Muon", "Muon on the >= 2-D weights, the package's AdamW (betas (0.9, 0.95), lr 0.015 x Muon's, "
         "the package defaults' ratio) on the other tensors", build=_muon, relative_cost=2.0),
    _arm("schedulefree-adamw", "ScheduleFreeAdamW", "package defaults; train() before training, eval() before "
         "evaluation", step=ScheduleFreeStep()),
    _arm("shampoo", "Shampoo", "package defaults (preconditioner every step, matrix_eps 1e-6)", relative_cost=3.0),
    # Kron's preconditioner is applied with a five-operand torch.einsum; without opt_einsum torch
    # contracts it left to right through a 100^4 intermediate (3.4 s a step on the mnist1d MLP).
    _arm("kron", "Kron", "package defaults (PSGD Kron preconditioner)", relative_cost=2.5,
         also_requires=("opt_einsum",)),
    _arm("lion", "Lion", "package defaults (betas (0.9, 0.99))"),
    # Its step size is one estimate over all parameters of a group: never several models in one.
    _arm("prodigy", "Prodigy", "learning-rate free: lr fixed at 1.0, d_coef tuned", relative_cost=1.1, stackable=False,
         space=SearchSpace({"lr": Fixed(1.0), "d_coef": Float(0.1, 10.0, log=True)})),
]
