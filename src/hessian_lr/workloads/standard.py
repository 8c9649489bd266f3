"""The standard workloads on real data read from disk: AlgoPerf's CIFAR-10 ResNet-18, DeepOBS' CIFAR-10
3c3d and nanoGPT's shakespeare_char GPT.

Each is built by a factory taking keyword options (the data folder, and the GPT's ``size``) and
returns a :class:`~hessian_lr.workloads.base.Workload` whose data are
:class:`~hessian_lr.workloads.data.Loaders`: the training stream gathers its minibatches from the
images (or tokens) held as one tensor, with every random draw taken from the run's generator
(:mod:`hessian_lr.workloads.cifar10`, :mod:`hessian_lr.workloads.shakespeare`). Sizes, budgets and
the sources of the reference numbers are in ``docs/workloads.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from hessian_lr.workloads import cifar10, shakespeare
from hessian_lr.workloads.base import Reference, Workload, bits_per_token, steps_to_accuracy
from hessian_lr.workloads.cnn3c3d import ThreeC3D
from hessian_lr.workloads.data import Batch, Loaders
from hessian_lr.workloads.gpt import CONFIGS, GPT, GPTConfig
from hessian_lr.workloads.resnet import ResNet18

__all__ = ["CifarTrainStream", "CifarEvalStream", "TextTrainStream", "TextEvalStream", "cifar10_loaders",
           "shakespeare_loaders", "cifar10_resnet18", "cifar10_3c3d", "shakespeare_char_gpt", "sequence_cross_entropy",
           "GPT_SIZES", "ALGOPERF_BATCH_SIZE", "ALGOPERF_STEP_HINT", "ALGOPERF_TARGET_ACCURACY"]

# AlgoPerf's CIFAR-10 workload (algoperf/workloads/cifar/workload.py): target validation accuracy,
# step hint (100 epochs at batch 1024) and evaluation batch
ALGOPERF_TARGET_ACCURACY = 0.85
ALGOPERF_STEP_HINT = 4_883
ALGOPERF_BATCH_SIZE = 1_024
ALGOPERF_EVAL_BATCH_SIZE = 1_024
DEEPOBS_BATCH_SIZE = 128  # DeepOBS' cifar10_3c3d
DEEPOBS_L2 = 0.002
CIFAR_EVAL_BATCH_SIZE = 1_000
# a CPU user's budget for 3c3d (one epoch, 351 steps at batch 128): docs/workloads.md has its time
THREEC3D_EPOCHS = 1


class CifarTrainStream:
    """One run's training stream of CIFAR-10: every ``iter()`` is one epoch, its order, crops and
    flips drawn from the run's generator when the epoch starts (:func:`cifar10.draw_epoch`).

    Args:
        data: the training images; batch_size: images per batch (the partial last batch is dropped);
        generator: the run's generator; augment: crop and flip.
    """

    def __init__(self, data: cifar10.LabeledImages, batch_size: int, generator: torch.Generator,
                 augment: bool = True) -> None:
        self.data, self.batch_size, self.generator, self.augment = data, batch_size, generator, augment

    def __len__(self) -> int:
        return len(self.data) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        draws = cifar10.draw_epoch(len(self.data), self.generator, device=self.data.images.device)
        return cifar10.train_batches(self.data, self.batch_size, draws, augment=self.augment)


class CifarEvalStream:
    """A split's images in order, in minibatches, normalised, not augmented (re-iterable)."""

    def __init__(self, data: cifar10.LabeledImages, batch_size: int) -> None:
        self.data, self.batch_size = data, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        return cifar10.eval_batches(self.data, self.batch_size)


def cifar10_loaders(batch_size: int, data_dir: str | Path | None = None,
                    eval_batch_size: int = CIFAR_EVAL_BATCH_SIZE) -> Loaders:
    """CIFAR-10 as AlgoPerf splits it (45k / 5k / 10k of the real files), augmented by crop + flip.

    Args:
        batch_size: training images per step.
        data_dir: the data folder (None: ``$HESSIAN_LR_DATA``, else the default).
        eval_batch_size: images per evaluation minibatch.

    Raises:
        DatasetError: missing or malformed files (one line, with the download command).
    """
    splits = cifar10.load_cifar10(data_dir)
    if not 1 <= batch_size <= len(splits.train):
        raise ValueError(f"batch_size must be in [1, {len(splits.train)}] (the CIFAR-10 training images under "
                         f"{cifar10.FOLDER}/), got {batch_size}")
    return Loaders(train=partial(CifarTrainStream, splits.train, batch_size),
                   val=partial(CifarEvalStream, splits.val, eval_batch_size),
                   test=partial(CifarEvalStream, splits.test, eval_batch_size),
                   steps_per_epoch=len(splits.train) // batch_size)


def cifar10_resnet18(data_dir: str | Path | None = None) -> Workload:
    """AlgoPerf's CIFAR-10 workload: ResNet-18, 45k/5k/10k, crop + flip, batch 1,024, 4,883 steps
    (its step hint), evaluated every 600 steps; reports the first evaluated step whose validation
    accuracy reaches AlgoPerf's target 0.85 (``steps_to_target``)."""
    return Workload(
        name="cifar10-resnet18",
        description="CIFAR-10 (AlgoPerf split: 45,000 train / 5,000 validation / 10,000 test; random crop with "
        "4-pixel zero padding + horizontal flip, drawn per run), AlgoPerf's ResNet-18 (3x3 stem, no max-pool, "
        "BatchNorm), cross-entropy; 11,173,962 parameters; batch 1,024, 4,883 steps (AlgoPerf's step hint, ~111 "
        "epochs), validation every 600 steps; target validation accuracy 0.85",
        load_data=partial(cifar10_loaders, ALGOPERF_BATCH_SIZE, data_dir, ALGOPERF_EVAL_BATCH_SIZE),
        build_model=ResNet18,
        batch_size=ALGOPERF_BATCH_SIZE,
        steps=ALGOPERF_STEP_HINT,
        eval_every=600,
        curvature="none",
        metrics=(steps_to_accuracy(ALGOPERF_TARGET_ACCURACY),),
        reference=Reference(
            metric="val_accuracy", value=ALGOPERF_TARGET_ACCURACY, tolerance=0.0,
            source="AlgoPerf CIFAR-10 workload (mlcommons/algorithmic-efficiency, algoperf/workloads/cifar/workload.py: "
            "validation_target_value 0.85, step_hint 4883, batch 1024 in its target setting)",
            check="tests/workloads/test_standard.py::test_the_resnet18_workload_is_algoperfs_cifar10_workload checks "
            "the setting (target, step hint, batch, split); reaching the target takes a GPU run (steps_to_target is "
            "then not None; docs/workloads.md)"),
    )


def cifar10_3c3d(data_dir: str | Path | None = None) -> Workload:
    """DeepOBS' ``cifar10_3c3d`` network, batch (128) and L2 factor (0.002) on AlgoPerf's split and
    augmentation, with a CPU-sized budget of one epoch (DeepOBS trains 100)."""
    return Workload(
        name="cifar10-3c3d",
        description="CIFAR-10 (AlgoPerf split 45,000 / 5,000 / 10,000; crop + flip), DeepOBS' 3c3d network (3 conv "
        "+ max-pool, dense 512-256-10, ReLU), cross-entropy + (0.002/2)·‖θ‖²; 895,210 parameters; batch 128 "
        "(DeepOBS), 1 epoch of 351 steps (DeepOBS trains 100 epochs)",
        load_data=partial(cifar10_loaders, DEEPOBS_BATCH_SIZE, data_dir),
        build_model=ThreeC3D,
        batch_size=DEEPOBS_BATCH_SIZE,
        epochs=THREEC3D_EPOCHS,
        l2=DEEPOBS_L2,
    )


# -- Shakespeare ------------------------------------------------------------------------------------

class TextTrainStream:
    """One run's stream of random-window batches: every ``iter()`` is one epoch of ``steps``
    batches, each ``batch_size`` windows at starts drawn from the run's generator."""

    def __init__(self, tokens: Tensor, context: int, batch_size: int, steps: int, generator: torch.Generator) -> None:
        self.tokens, self.context, self.batch_size, self.steps, self.generator = tokens, context, batch_size, steps, generator

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.steps):
            yield shakespeare.random_windows(self.tokens, self.context, self.batch_size, self.generator)


class TextEvalStream:
    """A split's fixed non-overlapping windows in minibatches (re-iterable)."""

    def __init__(self, tokens: Tensor, context: int, batch_size: int) -> None:
        self.tokens, self.context, self.batch_size = tokens, context, batch_size

    def __iter__(self) -> Iterator[Batch]:
        return shakespeare.eval_batches(self.tokens, self.context, self.batch_size)


def shakespeare_loaders(context: int, batch_size: int, eval_batch_size: int,
                        data_dir: str | Path | None = None) -> tuple[Loaders, int]:
    """Tiny Shakespeare's splits as streams, and the vocabulary size.

    An epoch is as many random-window batches as hold the training text's tokens once
    (``ceil(train_tokens / (batch_size · context))``).
    """
    corpus = shakespeare.load_shakespeare(data_dir, context=context)
    steps = math.ceil(len(corpus.train) / (batch_size * context))
    loaders = Loaders(train=partial(TextTrainStream, corpus.train, context, batch_size, steps),
                      val=partial(TextEvalStream, corpus.val, context, eval_batch_size),
                      test=partial(TextEvalStream, corpus.test, context, eval_batch_size),
                      steps_per_epoch=steps)
    return loaders, corpus.vocab_size


def sequence_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over every position: logits ``[B, T, V]``, targets ``[B, T]``."""
    return nn.functional.cross_entropy(logits.flatten(0, -2), targets.flatten())


# per size: nanoGPT's batch, iterations and evaluation interval, and this package's eval batch
GPT_SIZES = {
    "reference": dict(batch_size=64, steps=5_000, eval_every=250, eval_batch_size=64),
    "cpu": dict(batch_size=12, steps=2_000, eval_every=250, eval_batch_size=128),
}


def _gpt_data(size: str, data_dir: str | Path | None) -> Loaders:
    budget = GPT_SIZES[size]
    return shakespeare_loaders(CONFIGS[size]["context"], budget["batch_size"], budget["eval_batch_size"], data_dir)[0]


def _gpt_model(size: str, data_dir: str | Path | None) -> GPT:
    vocab = len(set(shakespeare.read_text(data_dir)))
    return GPT(GPTConfig(vocab_size=vocab, **CONFIGS[size]))


def shakespeare_char_gpt(size: str = "reference", data_dir: str | Path | None = None) -> Workload:
    """nanoGPT's ``shakespeare_char``: its GPT, split and budget (``size="reference"``: 6 layers, d 384,
    context 256, dropout 0.2, batch 64, 5,000 iterations; validation loss 1.4697 in nanoGPT) or its
    README's CPU configuration (``size="cpu"``: 4 layers, d 128, context 64, no dropout, batch 12,
    2,000 iterations; ~1.88 there).

    Args:
        size: ``"reference"`` or ``"cpu"``.
        data_dir: the data folder (None: ``$HESSIAN_LR_DATA``, else the default).
    """
    if size not in GPT_SIZES:
        raise ValueError(f"size must be one of {', '.join(GPT_SIZES)}, got {size!r}")
    budget, shape = GPT_SIZES[size], CONFIGS[size]
    reference = size == "reference"
    return Workload(
        name="shakespeare-char-gpt" if reference else "shakespeare-char-gpt-cpu",
        description=f"Tiny Shakespeare characters (nanoGPT's first 90% train; its validation 10% halved into "
        f"validation / test), nanoGPT's GPT ({shape['n_layer']} layers, {shape['n_head']} heads, width "
        f"{shape['n_embd']}, context {shape['context']}, dropout {shape['dropout']}, no biases, tied embedding), "
        f"next-character cross-entropy; {'10.65M' if reference else '0.80M'} parameters; batch "
        f"{budget['batch_size']} random windows, {budget['steps']:,} steps, validation every {budget['eval_every']} "
        f"steps on fixed windows; reports bits per character",
        load_data=partial(_gpt_data, size, data_dir),
        build_model=partial(_gpt_model, size, data_dir),
        loss_fn=sequence_cross_entropy,
        batch_size=budget["batch_size"],
        steps=budget["steps"],
        eval_every=budget["eval_every"],
        curvature="none",
        metrics=(bits_per_token(),),
        reference=Reference(
            metric="val_loss", value=1.4697 if reference else 1.88, tolerance=0.05 if reference else 0.1,
            source="nanoGPT README (https://github.com/karpathy/nanoGPT): shakespeare_char, AdamW lr 1e-3 with "
            "warm-up and cosine decay, " + ("5,000 iterations: best validation loss 1.4697" if reference else
                                            "its CPU configuration, 2,000 iterations: validation loss ~1.88"),
            check="tests/workloads/test_standard.py::test_the_gpt_workloads_read_the_vocabulary_and_windows_from_the_text "
            "checks the setting; the loss itself takes a full run (a GPU for the reference size; docs/workloads.md). "
            "nanoGPT's validation text is this workload's validation + test halves: compare the mean of val_loss and "
            "test_loss"),
    )
