"""The training loop: one epoch skeleton for one model or K models at once.

:func:`train` trains a fresh model per :class:`Run` (hyperparameters and a seed) for a number of
epochs and returns a :class:`RunResult` per run. The skeleton below owns everything that is the
same whichever way the models are stepped — seeding, batch order, validation, divergence, the
curves and the wall-time accounting — so a new metric or rule is written once. How a minibatch
step happens is the job of a *model set*:

* :class:`~hessian_lr.training.single.SingleModel` — one ``nn.Module`` and the arm's optimizer,
  nanoGPT-style (``logits = model(x); loss = ...; arm backward; optimizer.step()``): the reference;
* :class:`~hessian_lr.training.stacked.StackedModels` — K models of one workload with their
  parameters stacked into ``[K, *shape]`` tensors and stepped by the arm's own optimizer (one
  stacked optimizer where :mod:`~hessian_lr.training.stacking` shows that is the same training,
  else one per model).

Semantics, run by run: the seed fixes the initial weights (``seed_everything(seed)`` then
``workload.build_model()``) and the batch order (``torch.Generator().manual_seed(seed)``, one
``randperm`` per epoch), so runs of different arms with the same seed are paired. The validation
loss is taken before training (epoch 0) and after every epoch. A run whose gradient holds inf/NaN
(where HessianLRAdaptation raises ``FloatingPointError``) stops stepping for the rest of that
epoch; it, and any run whose validation loss is non-finite, gets ``None`` as its last curve entry
and ends there, ``diverged``. The validation and test losses are ``workload.loss_fn`` (without the
workload's L2 penalty, which only enters training). Wall seconds are each run's share of the
epoch's time (split evenly among the runs trained in it, so a batch's shares add up to its wall
time), including validation.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from hessian_lr.arms import Arm
from hessian_lr.workloads import Workload

__all__ = ["Run", "RunResult", "ModelSet", "seed_everything", "initial_model", "train", "train_run",
           "flush_subnormals", "GLOBAL_RNG_LOCK", "ModelRNG", "Progress"]

# torch warns once that backward(create_graph=True) makes a parameter <-> gradient reference cycle;
# the model sets break it by setting every gradient to None right after each step.
warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True", category=UserWarning)

# ``progress(model_epochs)``: that many model-epochs are done (trained, or skipped after divergence).
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Run:
    """One model to train: the optimizer's constructor hyperparameters and the seed."""

    hyperparameters: Mapping[str, Any]
    seed: int

    @property
    def lr(self) -> float | None:
        lr = self.hyperparameters.get("lr")
        return None if lr is None else float(lr)


@dataclass
class RunResult:
    """One training run. ``None`` marks a loss never reached (the run diverged before)."""

    lr: float | None
    seed: int
    epochs: int
    val_loss_curve: list[float | None]  # epoch 0 (before training) .. epochs
    val_loss: float | None  # the last entry of the curve
    test_loss: float | None = None
    test_accuracy: float | None = None
    wall_s: float = 0.0
    epoch_wall_s: list[float] = field(default_factory=list)  # cumulative seconds at the end of each epoch
    diverged: bool = False
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    steps_per_epoch: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class ModelSet(Protocol):
    """K models being trained together (K = 1 for :class:`SingleModel`).

    Positions ``0 .. size-1`` index the models still in the set, in the order of the runs
    given at construction minus the dropped ones.
    """

    size: int

    def train_mode(self) -> None: ...

    def eval_mode(self) -> None: ...

    def step(self, x: Tensor, y: Tensor) -> Tensor | None:
        """One optimizer step of every model that is not stopped, on its minibatch ``x[k]``,
        ``y[k]``. Returns a bool mask of the models whose gradient was non-finite in this step
        (they are stopped until :meth:`resume`), or None when there were none."""

    def resume(self) -> None:
        """Clear the stopped marks (a new epoch begins)."""

    def evaluate(self, x: Tensor, y: Tensor, accuracy: bool) -> tuple[Tensor, Tensor | None]:
        """Per-model mean loss ``[size]`` (and accuracy ``[size]``) on shared inputs."""

    def keep(self, positions: Sequence[int]) -> None:
        """Drop every model but those at ``positions``."""


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Initial weights, and whatever an optimizer draws (Kron's preconditioner updates, AdaHessian's
# probes, an estimator's seed), come from the process-global RNGs. Runs trained at once in several
# threads of one process (lanes) take this lock around every use of the global state — seeding and
# drawing a model, swapping a model's own stream in and out (ModelRNG) — so that each model sees
# the stream it sees when trained alone. Reentrant: ModelRNG.initial holds it across initial_model.
GLOBAL_RNG_LOCK = threading.RLock()


def initial_model(workload: Workload, seed: int) -> nn.Module:
    """``workload.build_model()`` right after ``seed_everything(seed)``: the weights every run
    with ``seed`` starts from, whichever arm trains it."""
    with GLOBAL_RNG_LOCK:
        seed_everything(seed)
        return workload.build_model()


class ModelRNG:
    """One model's own stream of torch's global RNG: the state the global generator would be in
    for this model had it trained alone in its process (seeded, its weights drawn, then whatever
    its optimizer drew so far).

    :meth:`active` swaps that state in for a block (building the optimizer, a step) and back out,
    under :data:`GLOBAL_RNG_LOCK`, so neither another model of the same process nor another lane
    drawing its initial weights sees or moves it.
    """

    def __init__(self, state: Tensor) -> None:
        self.state = state

    @classmethod
    def initial(cls, workload: Workload, seed: int) -> tuple[nn.Module, ModelRNG]:
        """:func:`initial_model` and the global RNG state right after it, taken atomically."""
        with GLOBAL_RNG_LOCK:
            model = initial_model(workload, seed)
            return model, cls(torch.get_rng_state())

    def copy(self) -> ModelRNG:
        """An independent stream starting from the same state (another model of the same seed)."""
        return ModelRNG(self.state.clone())

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with GLOBAL_RNG_LOCK:
            outer = torch.get_rng_state()
            torch.set_rng_state(self.state)
            try:
                yield
            finally:
                self.state = torch.get_rng_state()
                torch.set_rng_state(outer)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _epoch_batches(data_x: Tensor, data_y: Tensor, orders: dict[int, Tensor], seeds: Sequence[int]) -> tuple[Tensor, Tensor]:
    """``[K, n, ...]`` inputs and labels of this epoch for models with ``seeds`` (one shared
    expanded view when all models share a seed: no K copies)."""
    if len(set(seeds)) == 1:
        order = orders[seeds[0]]
        return (data_x[order].unsqueeze(0).expand(len(seeds), *data_x.shape),
                data_y[order].unsqueeze(0).expand(len(seeds), *data_y.shape))
    order = torch.stack([orders[seed] for seed in seeds])
    return data_x[order], data_y[order]


def run_epochs(workload: Workload, models: ModelSet, runs: Sequence[Run], *, epochs: int, evaluate_test: bool,
               progress: Progress | None = None) -> list[RunResult]:
    """The epoch skeleton: train ``models`` (built for ``runs``, in that order) and return one
    result per run, in the order of ``runs``."""
    data = workload.data
    n, batch_size = len(data.x_train), workload.batch_size
    classification = getattr(workload, "task", "classification") == "classification"
    generators = {seed: torch.Generator().manual_seed(seed) for seed in sorted({r.seed for r in runs})}
    active = list(range(len(runs)))  # run index of each position in the model set
    curves: list[list[float | None]] = [[] for _ in runs]
    walls: list[list[float]] = [[] for _ in runs]
    share = [0.0] * len(runs)
    diverged = [False] * len(runs)

    models.eval_mode()
    for index, value in zip(active, models.evaluate(data.x_val, data.y_val, accuracy=False)[0].tolist()):
        curves[index].append(_finite(value))
    for epoch in range(1, epochs + 1):
        if not active:
            break
        start = time.perf_counter()
        orders = {seed: torch.randperm(n, generator=g) for seed, g in generators.items()}
        x_epoch, y_epoch = _epoch_batches(data.x_train, data.y_train, orders, [runs[i].seed for i in active])
        stopped = torch.zeros(len(active), dtype=torch.bool)
        models.train_mode()
        for i in range(0, n, batch_size):
            failed = models.step(x_epoch[:, i : i + batch_size], y_epoch[:, i : i + batch_size])
            if failed is not None:
                stopped |= failed
                if bool(stopped.all()):
                    break
        models.resume()
        models.eval_mode()
        val_loss = models.evaluate(data.x_val, data.y_val, accuracy=False)[0].tolist()
        elapsed = (time.perf_counter() - start) / len(active)
        keep, skipped = [], 0
        for position, (index, value) in enumerate(zip(active, val_loss)):
            share[index] += elapsed
            walls[index].append(share[index])
            if bool(stopped[position]) or not math.isfinite(value):
                diverged[index] = True
                curves[index].append(None)
                skipped += epochs - epoch
            else:
                curves[index].append(value)
                keep.append(position)
        if len(keep) < len(active):
            models.keep(keep)
            active = [active[p] for p in keep]
        if progress is not None:
            progress(len(val_loss) + skipped)

    test: dict[int, tuple[float, float | None]] = {}
    if evaluate_test and active:
        loss, accuracy = models.evaluate(data.x_test, data.y_test, accuracy=classification)
        accuracies = accuracy.tolist() if accuracy is not None else [None] * len(active)
        test = dict(zip(active, zip(loss.tolist(), accuracies)))

    steps_per_epoch = math.ceil(n / batch_size)
    results = []
    for index, run in enumerate(runs):
        result = RunResult(lr=run.lr, seed=run.seed, epochs=epochs, val_loss_curve=curves[index],
                           val_loss=curves[index][-1], wall_s=share[index], epoch_wall_s=walls[index],
                           diverged=diverged[index], hyperparameters=dict(run.hyperparameters),
                           steps_per_epoch=steps_per_epoch)
        if index in test:
            result.test_loss, result.test_accuracy = _finite(test[index][0]), test[index][1]
        results.append(result)
    return results


def flush_subnormals() -> None:
    """Make this process's CPU arithmetic flush subnormal floats (below ~1.2e-38 in float32) to
    zero. A matrix product over subnormal values runs ~200× slower on x86 (measured here: 25 ms
    instead of 0.12 ms for a [10, 100, 100] batched product), and training produces them once
    predictions saturate (softmax probabilities of ~1e-40) or parameters converge to zero, so one
    run could otherwise take minutes. Every run the engine trains does the same, so comparisons
    stay fair; values that small carry no information at float32 precision anyway."""
    torch.set_flush_denormal(True)


def _stacked_serves_one(workload: Workload, arm: Arm) -> bool:
    """Whether one model trains faster stacked: the hand-written batched MLP backward applies."""
    from hessian_lr.training.stacked import hand_written_path_serves

    return hand_written_path_serves(workload, arm)


def train(workload: Workload, arm: Arm, runs: Sequence[Run], *, epochs: int, evaluate_test: bool = True,
          batch: bool = True, progress: Progress | None = None) -> list[RunResult]:
    """Train one fresh model per run; results in the order of ``runs``.

    With ``batch`` the runs train at once as stacked models when the arm's step allows it
    (``TrainStep.stacks``) — a single run too where the engine's hand-written MLP backward serves
    the workload (~1.5× faster than autograd through the module for one model); otherwise one
    after another, each through the same skeleton with
    :class:`~hessian_lr.training.single.SingleModel`, the plain reference loop. Subnormal floats
    are flushed to zero in this process (:func:`flush_subnormals`).
    """
    flush_subnormals()
    runs = [r if isinstance(r, Run) else Run(*r) for r in runs]
    if not runs:
        return []
    if batch and arm.step.stacks and (len(runs) > 1 or _stacked_serves_one(workload, arm)):
        from hessian_lr.training.stacked import StackedModels
        from hessian_lr.training.stacking import hyperparameter_key

        # Runs that may share an optimizer (hyperparameters equal but for the lr) side by side.
        keys = [hyperparameter_key(run.hyperparameters) for run in runs]
        order = sorted(range(len(runs)), key=lambda i: (keys.index(keys[i]), i))
        grouped = [runs[i] for i in order]
        results = run_epochs(workload, StackedModels(workload, arm, grouped), grouped, epochs=epochs,
                             evaluate_test=evaluate_test, progress=progress)
        by_run: list[RunResult | None] = [None] * len(runs)
        for position, i in enumerate(order):
            by_run[i] = results[position]
        return by_run  # type: ignore[return-value]
    from hessian_lr.training.single import SingleModel

    results = []
    for run in runs:
        results += run_epochs(workload, SingleModel(workload, arm, run), [run], epochs=epochs,
                              evaluate_test=evaluate_test, progress=progress)
    return results


def train_run(workload: Workload, arm: Arm, hyperparameters: Mapping[str, Any] | float, *, epochs: int, seed: int,
              evaluate_test: bool = True, progress: Progress | None = None) -> RunResult:
    """Train one model (``hyperparameters`` may be just the lr)."""
    if not isinstance(hyperparameters, Mapping):
        hyperparameters = {"lr": float(hyperparameters)}
    return train(workload, arm, [Run(dict(hyperparameters), seed)], epochs=epochs, evaluate_test=evaluate_test,
                 batch=False, progress=progress)[0]
