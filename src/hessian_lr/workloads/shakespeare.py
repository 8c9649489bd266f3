"""Tiny Shakespeare as nanoGPT's ``shakespeare_char`` reads it: characters, splits, context windows.

Data (nanoGPT, ``data/shakespeare_char/prepare.py``; the file is char-rnn's
``data/tinyshakespeare/input.txt``): ``<data dir>/shakespeare_char/input.txt``, UTF-8 text. The
vocabulary is the sorted set of its characters (65 for the real file), each character encoded as
its index in that list.

Splits: nanoGPT trains on the first 90% of the characters (``data[:int(n*0.9)]``) and validates on
the last 10%; it has no test split. Here training is the same first 90%, and nanoGPT's validation
text is cut in two at ``int(n*0.95)``: the first half validates (tuning), the second half tests (the
final runs). On the real file: 1,003,854 / 55,770 / 55,770 characters. nanoGPT's validation loss is
the loss over both halves, which with equal halves is the mean of the two.

Batches (nanoGPT's ``get_batch``): ``batch_size`` windows of ``context`` characters at uniformly
drawn starts in ``[0, len − context)``, the targets the same windows shifted by one character,
drawn from the generator the caller passes. Evaluation (nanoGPT's ``estimate_loss`` averages 200
random batches): here a fixed set — the non-overlapping windows at ``0, context, 2·context, …`` that
fit, every character of the split predicted once with the same spread of context lengths as random
windows have — in minibatches, so every run sees the same evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from hessian_lr.workloads.datadir import dataset_error, resolve_data_dir

__all__ = ["DATASET", "FOLDER", "FILE", "TRAIN_END", "VAL_END", "CharCorpus", "read_text", "split_points",
           "load_shakespeare", "draw_window_starts", "windows", "random_windows", "eval_window_starts",
           "eval_batches"]

DATASET = "shakespeare"
FOLDER = "shakespeare_char"
FILE = "input.txt"
TRAIN_END = 0.9  # nanoGPT's train/validation boundary
VAL_END = 0.95  # nanoGPT's validation text halved: validation / test


@dataclass(frozen=True)
class CharCorpus:
    """The character vocabulary and the three splits as int64 token tensors on one device."""

    vocabulary: str
    train: Tensor
    val: Tensor
    test: Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def encode(self, text: str) -> Tensor:
        """The token ids of ``text`` (every character must be in the vocabulary)."""
        index = {ch: i for i, ch in enumerate(self.vocabulary)}
        return torch.tensor([index[ch] for ch in text], dtype=torch.int64)

    def decode(self, tokens: Tensor) -> str:
        """The text of token ids ``tokens``."""
        return "".join(self.vocabulary[i] for i in tokens.tolist())


def read_text(data_dir: str | Path | None = None) -> str:
    """``<data_dir>/shakespeare_char/input.txt`` as text.

    Raises:
        DatasetError: one line naming the file when it is missing, unreadable, not UTF-8 or empty.
    """
    root = resolve_data_dir(data_dir)
    path = root / FOLDER / FILE
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise dataset_error(path, "missing", DATASET, root) from None
    except OSError as exc:
        raise dataset_error(path, f"cannot be read ({exc.strerror or exc})", DATASET, root) from None
    except UnicodeDecodeError as exc:
        raise dataset_error(path, f"not UTF-8 text (byte {exc.start})", DATASET, root) from None
    if not text:
        raise dataset_error(path, "empty", DATASET, root)
    return text


def split_points(length: int) -> tuple[int, int]:
    """Where training ends and validation ends: ``(int(n·0.9), int(n·0.95))``."""
    return int(length * TRAIN_END), int(length * VAL_END)


def load_shakespeare(data_dir: str | Path | None = None, device: torch.device | str | None = None,
                     context: int = 1) -> CharCorpus:
    """The encoded splits of ``input.txt`` (see the module docstring).

    Args:
        data_dir: the data folder (None: ``$HESSIAN_LR_DATA``, else the default).
        device: where the token tensors are put (None: the CPU).
        context: the window length the splits must hold (each needs ``context + 1`` characters).

    Raises:
        DatasetError: the file is missing or unreadable, or too short for a window in every split.
    """
    text = read_text(data_dir)
    vocabulary = "".join(sorted(set(text)))
    # one byte per character when the vocabulary fits (it does for real text): a table lookup
    # instead of a Python loop over a million characters
    if max(map(ord, vocabulary)) < 256:
        table = torch.zeros(256, dtype=torch.int64)
        table[torch.tensor([ord(ch) for ch in vocabulary])] = torch.arange(len(vocabulary))
        codes = torch.frombuffer(bytearray(text.encode("latin-1")), dtype=torch.uint8)
        tokens = table[codes.long()]
    else:
        index = {ch: i for i, ch in enumerate(vocabulary)}
        tokens = torch.tensor([index[ch] for ch in text], dtype=torch.int64)
    train_end, val_end = split_points(len(tokens))
    shortest = min(train_end, val_end - train_end, len(tokens) - val_end)
    if shortest < context + 1:
        root = resolve_data_dir(data_dir)
        raise dataset_error(root / FOLDER / FILE, f"{len(tokens)} characters leave a split of {shortest}, shorter "
                            f"than one window of context {context} plus its target", DATASET, root)
    device = torch.device("cpu") if device is None else device
    return CharCorpus(vocabulary, tokens[:train_end].to(device), tokens[train_end:val_end].to(device),
                      tokens[val_end:].to(device))


def draw_window_starts(length: int, context: int, batch_size: int, generator: torch.Generator) -> Tensor:
    """``batch_size`` window starts uniform in ``[0, length − context)`` (nanoGPT's ``get_batch``),
    on the generator's device."""
    if length <= context:
        raise ValueError(f"a split of {length} tokens holds no window of context {context} plus its target")
    return torch.randint(length - context, (batch_size,), generator=generator, device=generator.device)


def windows(tokens: Tensor, starts: Tensor, context: int) -> tuple[Tensor, Tensor]:
    """The windows at ``starts``: inputs ``tokens[s : s+context]`` and targets ``tokens[s+1 : s+context+1]``,
    each ``[len(starts), context]``, gathered in one indexing op."""
    index = starts.to(tokens.device)[:, None] + torch.arange(context, device=tokens.device)
    return tokens[index], tokens[index + 1]


def random_windows(tokens: Tensor, context: int, batch_size: int,
                   generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One training batch: ``batch_size`` random windows of ``tokens`` and their shifted targets."""
    return windows(tokens, draw_window_starts(len(tokens), context, batch_size, generator), context)


def eval_window_starts(length: int, context: int) -> Tensor:
    """The evaluation windows' starts: ``0, context, 2·context, …`` while a window and its target fit
    (``(length − 1) // context`` windows)."""
    return torch.arange((length - 1) // context) * context


def eval_batches(tokens: Tensor, context: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The fixed evaluation windows of ``tokens`` in minibatches of ``batch_size`` (the last may be
    smaller), in order.

    Yields:
        ``(x int64 [b, context], y int64 [b, context])``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = eval_window_starts(len(tokens), context).to(tokens.device)
    for first in range(0, len(starts), batch_size):
        yield windows(tokens, starts[first:first + batch_size], context)
