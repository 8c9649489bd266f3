"""CIFAR-10 read from its python pickles, split as AlgoPerf does, augmented whole batches at a time.

Format (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html; the layout torchvision's
``CIFAR10`` reads too): ``<data dir>/cifar-10-batches-py/`` holds ``data_batch_1`` … ``data_batch_5``
(the 50,000 training images) and ``test_batch`` (10,000), each a pickle of a dict with ``b"data"``,
uint8 ``[N, 3072]`` channel-major (1,024 red, 1,024 green, 1,024 blue values, rows of 32), and
``b"labels"`` (N ints in 0..9). The pickles are read with an unpickler that builds numpy arrays and
nothing else (a pickle can name any callable; these files only need numpy's).

Split (AlgoPerf's ``algoperf/workloads/cifar/cifar_pytorch/workload.py``): the training files in
order, the first 90% for training and the last 10% for validation, no shuffling — 45,000 / 5,000 of
the real 50,000; the test set is ``test_batch``. The rule holds for any size (``N // 10`` validation
images), so small fixture files split the same way.

Images stay one uint8 tensor ``[N, 3, 32, 32]`` (on the device when one is given: 184 MB for all
60,000). Training batches are gathered from it, augmented as whole batches — a random 32x32 crop of
the image zero-padded by 4 pixels, then a horizontal flip with probability ½ (AlgoPerf's
``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``), done as one gather over the batch as the
CIFAR-10 speed records do (airbench) — and normalised with CIFAR-10's channel mean and standard
deviation (AlgoPerf's ``train_mean``/``train_stddev``). Every random draw of an epoch (the order, the
crop offsets and the flips) is made when the epoch starts, from the generator the caller passes, so
the run's seed fixes them and batch ``k`` of an epoch is known without producing batches ``0..k-1``.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hessian_lr.workloads.datadir import dataset_error, resolve_data_dir

__all__ = ["DATASET", "FOLDER", "TRAIN_FILES", "TEST_FILE", "NUM_CLASSES", "IMAGE_SHAPE", "MEAN", "STD", "PADDING",
           "LabeledImages", "Cifar10Splits", "EpochDraws", "read_batch_file", "write_batch_file", "validation_size",
           "load_cifar10",
           "draw_epoch", "crop_flip", "normalize", "train_batches", "eval_batches"]

DATASET = "cifar10"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
# CIFAR-10's training-set channel statistics on the [0, 1] scale (AlgoPerf's train_mean/train_stddev)
MEAN = (0.49139968, 0.48215827, 0.44653124)
STD = (0.24703233, 0.24348505, 0.26158768)
PADDING = 4
VALIDATION_DIVISOR = 10  # the last N // 10 training images validate: 5,000 of 50,000

# what a CIFAR-10 pickle may build: numpy arrays and their dtypes (numpy 1 and 2 module names), and
# the bytes a protocol-2 pickle written by Python 3 encodes through _codecs
_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        module = module.replace("numpy.core.", "numpy._core.", 1) if module.startswith("numpy.core.") else module
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 file never does")
        return super().find_class(module, name)


@dataclass(frozen=True)
class LabeledImages:
    """uint8 images ``[N, 3, 32, 32]`` and int64 labels ``[N]`` on one device."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str | None) -> LabeledImages:
        """The same images and labels on ``device`` (self when None)."""
        if device is None:
            return self
        return LabeledImages(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Cifar10Splits:
    """AlgoPerf's train / validation split of the training files, and the test file."""

    train: LabeledImages
    val: LabeledImages
    test: LabeledImages


def read_batch_file(path: Path, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 pickle as uint8 images ``[N, 3, 32, 32]`` and int64 labels ``[N]``.

    Args:
        path: the ``data_batch_*`` or ``test_batch`` file.
        data_dir: the data folder (named in the error's download command).

    Returns:
        ``(images, labels)`` as numpy arrays.

    Raises:
        DatasetError: one line naming ``path`` when it is missing, not a readable pickle, or not of
            the format above (keys, dtype, shape, label range).
    """
    def fail(problem: str) -> Exception:
        return dataset_error(path, problem, DATASET, data_dir)

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise fail("missing") from None
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc})") from None
    try:
        entry = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # a truncated or foreign file fails in many ways; each is one line
        raise fail(f"not a readable CIFAR-10 pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(entry, dict) or b"data" not in entry or b"labels" not in entry:
        raise fail("not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    data, labels = entry[b"data"], entry[b"labels"]
    pixels = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != pixels:
        shown = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise fail(f"b'data' must be uint8 [N, {pixels}], got {shown}")
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise fail("b'labels' must be a list of integers") from None
    if label_array.shape != (data.shape[0],):
        raise fail(f"b'labels' must hold one label per image ({data.shape[0]}), got shape {list(label_array.shape)}")
    if label_array.size and not (0 <= label_array.min() and label_array.max() < NUM_CLASSES):
        raise fail(f"labels must lie in [0, {NUM_CLASSES - 1}], got [{label_array.min()}, {label_array.max()}]")
    return data.reshape(-1, *IMAGE_SHAPE), label_array


def write_batch_file(path: Path, images: np.ndarray, labels: list[int] | np.ndarray, name: str = "batch") -> None:
    """Write one CIFAR-10 pickle in the real files' format (protocol 2; what :func:`read_batch_file`
    reads): for test fixtures and benchmarks that need CIFAR-format files without the download.

    Args:
        path: the file.
        images: uint8 ``[N, 3, 32, 32]`` or ``[N, 3072]`` (channel-major).
        labels: N ints in 0..9.
        name: the ``b"batch_label"`` (and the stem of the ``b"filenames"``).
    """
    data = np.ascontiguousarray(images).reshape(len(images), -1)
    entry = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels], b"data": data,
             b"filenames": [f"{name}_{i}.png".encode() for i in range(len(data))]}
    path.write_bytes(pickle.dumps(entry, protocol=2))


def validation_size(num_training_images: int) -> int:
    """How many of the training files' images validate: ``N // 10`` (5,000 of 50,000, as AlgoPerf).

    Raises:
        ValueError: when fewer than 10 images leave no validation image.
    """
    size = num_training_images // VALIDATION_DIVISOR
    if size < 1:
        raise ValueError(f"CIFAR-10 training files hold {num_training_images} images; the split needs at least "
                         f"{VALIDATION_DIVISOR}")
    return size


def load_cifar10(data_dir: str | Path | None = None, device: torch.device | str | None = None) -> Cifar10Splits:
    """The train / validation / test images of ``<data_dir>/cifar-10-batches-py``.

    Args:
        data_dir: the data folder (None: ``$HESSIAN_LR_DATA``, else the default; see
            :func:`~hessian_lr.workloads.datadir.resolve_data_dir`).
        device: where the uint8 images and labels are put (None: the CPU).

    Returns:
        :class:`Cifar10Splits`: the first 90% of the training files' images in file order train, the
        last 10% validate, ``test_batch`` tests.

    Raises:
        DatasetError: one line naming the first missing or malformed file and the download command.
    """
    root = resolve_data_dir(data_dir)
    folder = root / FOLDER
    parts = [read_batch_file(folder / name, root) for name in (*TRAIN_FILES, TEST_FILE)]
    train_images = np.concatenate([images for images, _ in parts[:-1]])
    train_labels = np.concatenate([labels for _, labels in parts[:-1]])
    val_rows = validation_size(len(train_labels))
    cut = len(train_labels) - val_rows

    def labeled(images: np.ndarray, labels: np.ndarray) -> LabeledImages:
        return LabeledImages(torch.from_numpy(np.ascontiguousarray(images)),
                             torch.from_numpy(np.ascontiguousarray(labels))).to(device)

    return Cifar10Splits(train=labeled(train_images[:cut], train_labels[:cut]),
                         val=labeled(train_images[cut:], train_labels[cut:]),
                         test=labeled(*parts[-1]))


@dataclass(frozen=True)
class EpochDraws:
    """Every random draw of one training epoch, made up front.

    Attributes:
        order: a permutation of the training images ``[N]``.
        shift_y, shift_x: each image's crop offset into its padded copy, in ``[0, 2·padding]`` (row,
            column), indexed by position in ``order`` (``[N]`` each).
        flip: whether each image is mirrored left-right after the crop (``[N]`` bool).
    """

    order: Tensor
    shift_y: Tensor
    shift_x: Tensor
    flip: Tensor


def draw_epoch(num_images: int, generator: torch.Generator, device: torch.device | str | None = None,
               padding: int = PADDING) -> EpochDraws:
    """An epoch's order, crop offsets and flips, drawn from ``generator`` in that order.

    Args:
        num_images: training images.
        generator: the run's generator (its device is where the draws happen).
        device: where the draws are returned (None: the generator's device).
        padding: the crop's padding (offsets lie in ``[0, 2·padding]``).

    Returns:
        :class:`EpochDraws`.
    """
    on = generator.device
    order = torch.randperm(num_images, generator=generator, device=on)
    shifts = torch.randint(0, 2 * padding + 1, (2, num_images), generator=generator, device=on)
    flip = torch.randint(0, 2, (num_images,), generator=generator, device=on).bool()
    device = on if device is None else device
    return EpochDraws(order.to(device), shifts[0].to(device), shifts[1].to(device), flip.to(device))


def crop_flip(images: Tensor, shift_y: Tensor, shift_x: Tensor, flip: Tensor, padding: int = PADDING) -> Tensor:
    """Crop each image from its zero-padded copy at its offsets, then mirror the flipped ones.

    Output pixel ``(b, c, i, j)`` is ``padded[b, c, shift_y[b] + i, shift_x[b] + j']`` with
    ``j' = W-1-j`` where ``flip[b]`` else ``j``, and ``padded`` the image with ``padding`` zero pixels on
    every side: two gathers over the whole batch, no per-image loop.

    Args:
        images: ``[B, C, H, W]`` (any dtype; uint8 here).
        shift_y, shift_x: ``[B]`` offsets in ``[0, 2·padding]``; flip: ``[B]`` bool.
        padding: zero pixels added on each side before cropping.

    Returns:
        ``[B, C, H, W]``, the dtype of ``images``.
    """
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    rows = shift_y[:, None] + torch.arange(h, device=images.device)
    columns = torch.arange(w, device=images.device)
    columns = shift_x[:, None] + torch.where(flip[:, None], w - 1 - columns, columns)
    picked_rows = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return picked_rows.gather(3, columns[:, None, None, :].expand(b, c, h, w))


def normalize(images: Tensor) -> Tensor:
    """uint8 ``[B, 3, H, W]`` → float32 ``(x/255 − mean_c) / std_c`` per channel."""
    scale = torch.tensor([1 / (255 * s) for s in STD], device=images.device).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(MEAN, STD)], device=images.device).view(1, 3, 1, 1)
    return torch.addcmul(shift, images.to(torch.float32), scale)


def train_batches(data: LabeledImages, batch_size: int, draws: EpochDraws, augment: bool = True,
                  start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of training minibatches ``(x float32 [B, 3, 32, 32], y int64 [B])``.

    The images in ``draws.order``, ``len(data) // batch_size`` full batches (the last partial batch
    is dropped, as AlgoPerf's training loader does), cropped and flipped per ``draws`` when
    ``augment``, then normalised.

    Args:
        data: the training images.
        batch_size: images per batch.
        draws: this epoch's :func:`draw_epoch`.
        augment: crop and flip (False: the images as they are, in the drawn order).
        start_batch: the first batch to yield (a resumed epoch skips those already trained on).

    Yields:
        ``(x, y)`` on the images' device.
    """
    if not 1 <= batch_size <= len(data):
        raise ValueError(f"batch_size must be in [1, {len(data)}] (the training images), got {batch_size}")
    for start in range(start_batch * batch_size, len(data) - batch_size + 1, batch_size):
        rows = slice(start, start + batch_size)
        index = draws.order[rows]
        images = data.images[index]
        if augment:
            images = crop_flip(images, draws.shift_y[rows], draws.shift_x[rows], draws.flip[rows])
        yield normalize(images), data.labels[index]


def eval_batches(data: LabeledImages, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Every image once, in order, in minibatches of ``batch_size`` (the last may be smaller),
    normalised and not augmented.

    Yields:
        ``(x float32 [b, 3, 32, 32], y int64 [b])``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(data), batch_size):
        yield normalize(data.images[start:start + batch_size]), data.labels[start:start + batch_size]
