"""The training loop: one skeleton for one model or K models at once, in-memory data or loaders.

:func:`train` trains a fresh model per :class:`~hessian_lr.training.records.Run` (hyperparameters
and a seed) on a budget of epochs or steps and returns a
:class:`~hessian_lr.training.records.RunResult` per run. The skeleton below
(:func:`run_schedule`) owns everything that is the same whichever way the models are stepped and
wherever the batches come from — batch order, evaluation, divergence, the curves, the workload's
metrics and the wall-time accounting — so a new metric or rule is written once. How a minibatch
step happens is the job of a *model set*:

* :class:`~hessian_lr.training.single.SingleModel` — one ``nn.Module`` and the arm's optimizer,
  nanoGPT-style (``logits = model(x); loss = ...; arm backward; optimizer.step()``): the reference,
  on any device and precision;
* :class:`~hessian_lr.training.stacked.StackedModels` — K models of one workload with their
  parameters stacked into ``[K, *shape]`` tensors and stepped by the arm's own optimizer (one
  stacked optimizer where :mod:`~hessian_lr.training.stacking` shows that is the same training,
  else one per model).

Where batches come from is the job of a *batch source*: :class:`InMemoryBatches` slices a
workload's :class:`~hessian_lr.workloads.data.Splits` (moved to the device once) by one
``randperm`` per epoch from each seed's generator; :class:`LoaderBatches` iterates the run's own
stream of a workload's :class:`~hessian_lr.workloads.data.Loaders`.

Semantics, run by run: the seed fixes the initial weights (``seed_everything(seed)`` then
``workload.build_model()``), the batch order and every other draw of the data
(``torch.Generator().manual_seed(seed)``: one ``randperm`` per epoch, or the generator a loader's
stream is built with), and dropout (the model's own stream, :class:`~hessian_lr.training.records.ModelRNG`),
so runs of different arms with the same seed are paired. The validation loss is taken before
training (step 0) and at every evaluation: after every epoch, or every ``eval_every`` steps, and
after the last step. A run whose gradient holds inf/NaN (where HessianLRAdaptation raises
``FloatingPointError``) stops stepping until the next evaluation; it, and any run whose validation
loss is non-finite, gets ``None`` as its last curve entry and ends there, ``diverged``. The
validation and test losses are ``workload.loss_fn`` (without the workload's L2 penalty, which only
enters training), averaged over the split's minibatches by rows. Models train in train mode and
are evaluated in eval mode under ``torch.no_grad()``. Wall seconds are each run's share of each
evaluation period's time (split evenly among the runs trained in it, so a batch's shares add up to
its wall time), including evaluation.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hessian_lr.arms import Arm
from hessian_lr.training.placement import Placement
from hessian_lr.training.records import (
    GLOBAL_RNG_LOCK,
    ModelRNG,
    ModelSet,
    Progress,
    Run,
    RunResult,
    initial_model,
    seed_everything,
)
from hessian_lr.training.single import SingleModel
from hessian_lr.training.stacked import StackedModels, generic_path_supports, hand_written_path_serves, model_structure
from hessian_lr.training.stacking import hyperparameter_key
from hessian_lr.workloads import Workload
from hessian_lr.workloads.data import Batch, Loaders, Splits, minibatches

__all__ = ["Run", "RunResult", "ModelSet", "seed_everything", "initial_model", "train", "train_run",
           "run_schedule", "can_stack", "flush_subnormals", "GLOBAL_RNG_LOCK", "ModelRNG", "Progress",
           "InMemoryBatches", "LoaderBatches", "Schedule", "Checkpoint", "batches_of", "evaluate_batches"]

# torch warns once that backward(create_graph=True) makes a parameter <-> gradient reference cycle;
# the model sets break it by setting every gradient to None right after each step.
warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True", category=UserWarning)

# ``checkpoint(step, models)``: called after optimizer step ``step`` (1-based) at the steps a
# caller asks for (:class:`Schedule`.checkpoints), with the model set in train mode.
Checkpoint = Callable[[int, ModelSet], None]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class Schedule:
    """When a run steps and is evaluated: a budget of ``total`` steps, evaluations at
    ``eval_steps`` (step 0 first), epochs of ``steps_per_epoch`` steps.

    Args:
        steps_per_epoch: batches per epoch.
        epochs: the budget in epochs (used when ``steps`` is None).
        steps: the budget in optimizer steps.
        eval_every: evaluate every that many steps (and after the last); None: after every epoch.
    """

    def __init__(self, steps_per_epoch: int, epochs: int, steps: int | None = None,
                 eval_every: int | None = None) -> None:
        for name, value in (("steps_per_epoch", steps_per_epoch), ("epochs", epochs), ("steps", steps),
                            ("eval_every", eval_every)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.steps_per_epoch = steps_per_epoch
        self.total = steps if steps is not None else epochs * steps_per_epoch
        self.by_steps = steps is not None or eval_every is not None  # the curve indexes steps
        interval = eval_every if eval_every is not None else steps_per_epoch
        self.eval_steps = [0, *range(interval, self.total, interval), self.total]
        self.epochs = epochs if steps is None else math.ceil(self.total / steps_per_epoch)
        self.steps = steps


class InMemoryBatches:
    """Minibatches of in-memory :class:`Splits` for models with ``seeds`` (``[K, B, ...]``).

    The splits move to ``device`` once. Each seed has its own generator; every epoch draws one
    ``randperm`` per seed (on the CPU), and models sharing a seed share one expanded view."""

    def __init__(self, workload: Workload, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        data = workload.data
        assert isinstance(data, Splits)
        self.data = _splits_on(data, str(torch.device(device)))
        self.batch_size, self.eval_batch_size = workload.batch_size, workload.eval_batch_size
        self.generators = {seed: torch.Generator().manual_seed(seed) for seed in sorted(set(seeds))}
        self.steps_per_epoch = math.ceil(len(self.data.x_train) / self.batch_size)

    def epoch(self, seeds: Sequence[int]) -> Iterator[Batch]:
        """One epoch's minibatches of the models with ``seeds`` (the models still training)."""
        x, y, n = self.data.x_train, self.data.y_train, len(self.data.x_train)
        orders = {seed: torch.randperm(n, generator=g).to(x.device) for seed, g in self.generators.items()}
        if len(set(seeds)) == 1:
            order = orders[seeds[0]]
            x_epoch = x[order].unsqueeze(0).expand(len(seeds), *x.shape)
            y_epoch = y[order].unsqueeze(0).expand(len(seeds), *y.shape)
        else:
            order = torch.stack([orders[seed] for seed in seeds])
            x_epoch, y_epoch = x[order], y[order]
        for i in range(0, n, self.batch_size):
            yield x_epoch[:, i : i + self.batch_size], y_epoch[:, i : i + self.batch_size]

    def val(self) -> Iterable[Batch]:
        return minibatches(self.data.x_val, self.data.y_val, self.eval_batch_size)

    def test(self) -> Iterable[Batch] | None:
        return minibatches(self.data.x_test, self.data.y_test, self.eval_batch_size)


@functools.lru_cache(maxsize=8)
def _splits_on(data: Splits, device: str) -> Splits:
    """The splits on ``device``, copied there once per process."""
    return data.to(device)


class LoaderBatches:
    """The minibatches of one run's stream of a workload's :class:`Loaders` (``[1, B, ...]``).

    The stream is built once from a generator seeded with the run's seed; each epoch is one pass
    over it (at most ``steps_per_epoch`` batches). Batches move to the device non-blocking, from
    pinned memory where the device is a GPU."""

    def __init__(self, workload: Workload, seed: int, device: torch.device | str = "cpu") -> None:
        loaders = workload.data
        assert isinstance(loaders, Loaders)
        self.loaders = loaders
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda"
        self.steps_per_epoch = loaders.epoch_length()
        self.stream = loaders.train(torch.Generator().manual_seed(seed))

    def _moved(self, tensor: Tensor) -> Tensor:
        if tensor.device == self.device:
            return tensor
        if self.pin and tensor.device.type == "cpu" and not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def _batches(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for x, y in batches:
            yield self._moved(x), self._moved(y)

    def epoch(self, seeds: Sequence[int]) -> Iterator[Batch]:
        for x, y in itertools.islice(self._batches(self.stream), self.steps_per_epoch):
            yield x.unsqueeze(0), y.unsqueeze(0)

    def val(self) -> Iterable[Batch]:
        return self._batches(self.loaders.val())

    def test(self) -> Iterable[Batch] | None:
        return None if self.loaders.test is None else self._batches(self.loaders.test())


def evaluate_batches(models: ModelSet, batches: Iterable[Batch], accuracy: bool) -> tuple[list[float], list[float] | None]:
    """Per-model mean loss (and accuracy) over ``batches``, each batch weighted by its rows."""
    losses: Tensor | None = None
    accuracies: Tensor | None = None
    rows = 0
    for count, (x, y) in enumerate(batches):
        loss, acc = models.evaluate(x, y, accuracy=accuracy)
        n = len(x)
        if count == 0:  # one batch: its mean as it is (today's in-memory workloads, bit for bit)
            losses, accuracies, rows = loss, acc, n
            continue
        if count == 1:
            losses = losses * rows
            accuracies = None if accuracies is None else accuracies * rows
        losses = losses + loss * n
        accuracies = None if acc is None else accuracies + acc * n
        rows += n
    assert losses is not None, "an evaluation split has no batches"
    if count > 0:
        losses = losses / rows
        accuracies = None if accuracies is None else accuracies / rows
    return losses.tolist(), None if accuracies is None else accuracies.tolist()


def run_schedule(workload: Workload, models: ModelSet, runs: Sequence[Run], batches: InMemoryBatches | LoaderBatches,
                 schedule: Schedule, *, evaluate_test: bool, progress: Progress | None = None,
                 checkpoints: Sequence[int] = (), on_checkpoint: Checkpoint | None = None) -> list[RunResult]:
    """The skeleton: train ``models`` (built for ``runs``, in that order) on ``batches`` by
    ``schedule`` and return one result per run, in the order of ``runs``. ``on_checkpoint`` is
    called after each step in ``checkpoints``."""
    classification = getattr(workload, "task", "classification") == "classification"
    reads_accuracy = classification and any(m.reads_accuracy for m in workload.metrics)
    active = list(range(len(runs)))  # run index of each position in the model set
    curves: list[list[float | None]] = [[] for _ in runs]
    accuracy_curves: list[list[float | None]] = [[] for _ in runs]
    walls: list[list[float]] = [[] for _ in runs]
    share = [0.0] * len(runs)
    diverged = [False] * len(runs)
    watch = set(checkpoints) if on_checkpoint is not None else set()

    def evaluate_val() -> tuple[list[float], list[float] | None]:
        models.eval_mode()
        return evaluate_batches(models, batches.val(), reads_accuracy)

    val_loss, val_accuracy = evaluate_val()
    for position, index in enumerate(active):
        curves[index].append(_finite(val_loss[position]))
        if val_accuracy is not None:
            accuracy_curves[index].append(val_accuracy[position])

    evaluations = iter(schedule.eval_steps[1:])
    next_eval = next(evaluations)
    remaining_evals = len(schedule.eval_steps) - 1
    step = 0
    start = time.perf_counter()
    stopped, all_stopped = torch.zeros(len(active), dtype=torch.bool), False
    models.train_mode()
    finished = False
    while not finished:
        trained = step
        for x, y in batches.epoch([runs[i].seed for i in active]):
            failed = models.step(x, y)
            step += 1
            if failed is not None:
                stopped |= failed.cpu()
                all_stopped = bool(stopped.all())
            if watch and step in watch:
                on_checkpoint(step, models)  # type: ignore[misc]
            if step != next_eval and not all_stopped:
                continue
            # Evaluate. With every model stopped the period's remaining steps would change nothing:
            # every model ends here, diverged.
            models.resume()
            val_loss, val_accuracy = evaluate_val()
            remaining_evals -= 1
            elapsed = (time.perf_counter() - start) / len(active)
            keep, skipped = [], 0
            for position, (index, value) in enumerate(zip(active, val_loss)):
                share[index] += elapsed
                walls[index].append(share[index])
                if bool(stopped[position]) or not math.isfinite(value):
                    diverged[index] = True
                    curves[index].append(None)
                    skipped += remaining_evals
                else:
                    curves[index].append(value)
                    keep.append(position)
                if val_accuracy is not None:
                    accuracy_curves[index].append(val_accuracy[position])
            if len(keep) < len(active):
                models.keep(keep)
                active = [active[p] for p in keep]
            if progress is not None:
                progress(len(val_loss) + skipped)
            if not active or step >= schedule.total:
                finished = True
                break
            next_eval = next(evaluations)
            stopped, all_stopped = torch.zeros(len(active), dtype=torch.bool), False
            start = time.perf_counter()
            models.train_mode()
        if step == trained:
            raise ValueError(f"workload {workload.name!r}: its training stream yielded no batch in an epoch")

    test: dict[int, tuple[float, float | None]] = {}
    test_batches = batches.test() if evaluate_test and active else None
    if test_batches is not None:  # the models are in eval mode: the loop ends with an evaluation
        loss, accuracy = evaluate_batches(models, test_batches, classification)
        accuracies = accuracy if accuracy is not None else [None] * len(active)
        test = dict(zip(active, zip(loss, accuracies)))

    results = []
    for index, run in enumerate(runs):
        result = RunResult(lr=run.lr, seed=run.seed, epochs=schedule.epochs, val_loss_curve=curves[index],
                           val_loss=curves[index][-1], wall_s=share[index], epoch_wall_s=walls[index],
                           diverged=diverged[index], hyperparameters=dict(run.hyperparameters),
                           steps_per_epoch=schedule.steps_per_epoch)
        if index in test:
            result.test_loss, result.test_accuracy = _finite(test[index][0]), test[index][1]
        if schedule.by_steps:
            result.steps = schedule.total
            result.eval_steps = schedule.eval_steps[: len(curves[index])]
        if reads_accuracy:
            result.val_accuracy_curve = accuracy_curves[index]
        if workload.metrics:
            result.metrics = _metrics(workload, result, schedule)
        results.append(result)
    return results


def _metrics(workload: Workload, result: RunResult, schedule: Schedule) -> dict[str, float | None]:
    evaluations: dict[str, Any] = {
        "val_loss": result.val_loss, "val_loss_curve": result.val_loss_curve,
        "eval_steps": schedule.eval_steps[: len(result.val_loss_curve)],
        "val_accuracy_curve": result.val_accuracy_curve, "test_loss": result.test_loss,
        "test_accuracy": result.test_accuracy}
    return {metric.name: metric.compute(evaluations) for metric in workload.metrics}


def flush_subnormals() -> None:
    """Make this process's CPU arithmetic flush subnormal floats (below ~1.2e-38 in float32) to
    zero. A matrix product over subnormal values runs ~200× slower on x86 (measured here: 25 ms
    instead of 0.12 ms for a [10, 100, 100] batched product), and training produces them once
    predictions saturate (softmax probabilities of ~1e-40) or parameters converge to zero, so one
    run could otherwise take minutes. Every run the engine trains does the same, so comparisons
    stay fair; values that small carry no information at float32 precision anyway."""
    torch.set_flush_denormal(True)


def can_stack(workload: Workload, arm: Arm, placement: Placement | None = None) -> bool:
    """Whether K runs of ``arm`` on ``workload`` may train stacked: the arm's step stacks, the data
    are in memory, the placement is float32 eager, and the model has no buffers or dropout (or the
    hand-written MLP backward serves it). A BatchNorm model, a dropout model or a loader-fed
    workload trains one model at a time."""
    placement = placement or Placement()
    if not (arm.step.stacks and workload.in_memory and placement.precision == "fp32" and not placement.compile):
        return False
    return hand_written_path_serves(workload, arm) or generic_path_supports(model_structure(workload))


def train(workload: Workload, arm: Arm, runs: Sequence[Run], *, epochs: int | None = None, steps: int | None = None,
          eval_every: int | None = None, evaluate_test: bool = True, batch: bool = True,
          progress: Progress | None = None, placement: Placement | None = None) -> list[RunResult]:
    """Train one fresh model per run; results in the order of ``runs``.

    Args:
        workload, arm: what is trained and by which optimizer.
        runs: hyperparameters and seed of each model.
        epochs: the budget in epochs (default: the workload's).
        steps: the budget in optimizer steps instead (default: the workload's ``steps``, if any).
        eval_every: evaluate every that many steps (default: the workload's, else every epoch).
        evaluate_test: evaluate the test split at the end.
        batch: train the runs at once as stacked models where :func:`can_stack` allows it — a
            single run too where the engine's hand-written MLP backward serves the workload (faster
            than autograd through the module for one model: ``docs/engine.md``); otherwise one after another,
            each through the same skeleton with :class:`~hessian_lr.training.single.SingleModel`,
            the plain reference loop.
        progress: called with the model-evaluation periods done.
        placement: device, precision, compile (default: CPU, float32, eager).

    Subnormal floats are flushed to zero in this process (:func:`flush_subnormals`).
    """
    flush_subnormals()
    runs = [r if isinstance(r, Run) else Run(*r) for r in runs]
    if not runs:
        return []
    placement = placement or Placement()
    schedule = Schedule(workload.steps_per_epoch(), workload.epochs if epochs is None else epochs,
                        workload.steps if steps is None and epochs is None else steps,
                        workload.eval_every if eval_every is None else eval_every)
    device = placement.torch_device
    if batch and can_stack(workload, arm, placement) and (len(runs) > 1 or _stacked_serves_one(workload, arm)):
        # Runs that may share an optimizer (hyperparameters equal but for the lr) side by side.
        keys = [hyperparameter_key(run.hyperparameters) for run in runs]
        order = sorted(range(len(runs)), key=lambda i: (keys.index(keys[i]), i))
        grouped = [runs[i] for i in order]
        results = run_schedule(workload, StackedModels(workload, arm, grouped, device), grouped,
                               InMemoryBatches(workload, [r.seed for r in grouped], device), schedule,
                               evaluate_test=evaluate_test, progress=progress)
        by_run: list[RunResult | None] = [None] * len(runs)
        for position, i in enumerate(order):
            by_run[i] = results[position]
        return by_run  # type: ignore[return-value]
    results = []
    for run in runs:
        results += run_schedule(workload, SingleModel(workload, arm, run, placement), [run],
                                batches_of(workload, run.seed, device), schedule,
                                evaluate_test=evaluate_test, progress=progress)
    return results


def batches_of(workload: Workload, seed: int, device: torch.device | str) -> InMemoryBatches | LoaderBatches:
    """The batch source of one run of ``workload``."""
    if workload.in_memory:
        return InMemoryBatches(workload, [seed], device)
    return LoaderBatches(workload, seed, device)


def _stacked_serves_one(workload: Workload, arm: Arm) -> bool:
    """Whether one model trains faster stacked: the hand-written batched MLP backward applies."""
    return hand_written_path_serves(workload, arm)


def train_run(workload: Workload, arm: Arm, hyperparameters: dict[str, Any] | float, *, epochs: int | None = None,
              seed: int, steps: int | None = None, eval_every: int | None = None, evaluate_test: bool = True,
              progress: Progress | None = None, placement: Placement | None = None) -> RunResult:
    """Train one model (``hyperparameters`` may be just the lr), one at a time."""
    if not isinstance(hyperparameters, dict):
        hyperparameters = {"lr": float(hyperparameters)}
    return train(workload, arm, [Run(dict(hyperparameters), seed)], epochs=epochs, steps=steps,
                 eval_every=eval_every, evaluate_test=evaluate_test, batch=False, progress=progress,
                 placement=placement)[0]


def model_of(models: ModelSet) -> nn.Module:
    """The ``nn.Module`` of a one-model set (what a checkpoint callback inspects)."""
    model = getattr(models, "model", None)
    if model is None or models.size != 1:
        raise ValueError("a checkpoint callback's model set must hold one nn.Module model")
    return model
