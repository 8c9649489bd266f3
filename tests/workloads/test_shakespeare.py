"""nanoGPT's shakespeare_char data: vocabulary, splits, random and fixed windows, on a fixture input.txt."""

from __future__ import annotations

import pytest
import torch
from fixtures import SHAKESPEARE_TEXT, write_shakespeare

from hessian_lr.workloads import shakespeare
from hessian_lr.workloads.datadir import DatasetError


@pytest.fixture
def corpus(tmp_path):
    write_shakespeare(tmp_path)
    return shakespeare.load_shakespeare(tmp_path)


def test_the_vocabulary_is_the_sorted_set_of_characters_and_encoding_round_trips(corpus):
    assert corpus.vocabulary == "".join(sorted(set(SHAKESPEARE_TEXT)))
    assert corpus.vocabulary[:3] == "\n '" and corpus.vocab_size == len(set(SHAKESPEARE_TEXT))
    whole = torch.cat([corpus.train, corpus.val, corpus.test])
    assert torch.equal(whole, corpus.encode(SHAKESPEARE_TEXT)) and whole.dtype == torch.int64
    assert corpus.decode(whole) == SHAKESPEARE_TEXT
    assert int(corpus.encode("A")[0]) == corpus.vocabulary.index("A")


def test_the_splits_are_nanogpts_first_90_percent_then_its_validation_text_halved(corpus):
    n = len(SHAKESPEARE_TEXT)
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (
        int(n * 0.9), int(n * 0.95) - int(n * 0.9), n - int(n * 0.95))
    assert corpus.decode(corpus.train) == SHAKESPEARE_TEXT[:int(n * 0.9)]
    # the real file: nanoGPT's prepare.py prints "train has 1,003,854 tokens", "val has 111,540 tokens"
    train_end, val_end = shakespeare.split_points(1_115_394)
    assert (train_end, val_end - train_end, 1_115_394 - val_end) == (1_003_854, 55_770, 55_770)


def test_random_windows_are_drawn_from_the_generator_and_targets_are_shifted_by_one(corpus):
    def batch(seed):
        return shakespeare.random_windows(corpus.train, 16, 8, torch.Generator().manual_seed(seed))

    (x, y), (x2, y2), (x3, _) = batch(3), batch(3), batch(4)
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, x3)
    assert torch.equal(x[:, 1:], y[:, :-1])
    starts = shakespeare.draw_window_starts(len(corpus.train), 16, 8, torch.Generator().manual_seed(3))
    for row, start in zip(x, starts.tolist()):
        assert torch.equal(row, corpus.train[start:start + 16])
    assert int(starts.max()) < len(corpus.train) - 16  # nanoGPT's randint(len(data) - block_size)


def test_every_start_is_reachable_and_the_last_window_ends_at_the_last_token():
    tokens = torch.arange(20)
    starts = shakespeare.draw_window_starts(20, 4, 2000, torch.Generator().manual_seed(0))
    assert set(starts.tolist()) == set(range(16))
    x, y = shakespeare.windows(tokens, torch.tensor([15]), 4)
    assert x.tolist() == [[15, 16, 17, 18]] and y.tolist() == [[16, 17, 18, 19]]


def test_evaluation_uses_the_fixed_non_overlapping_windows_in_minibatches():
    tokens = torch.arange(23)
    assert shakespeare.eval_window_starts(23, 5).tolist() == [0, 5, 10, 15]  # (23 - 1) // 5 windows
    assert shakespeare.eval_window_starts(21, 5).tolist() == [0, 5, 10, 15]  # 15..19 and its target 20 fit
    assert shakespeare.eval_window_starts(20, 5).tolist() == [0, 5, 10]
    batches = list(shakespeare.eval_batches(tokens, 5, 3))
    assert [len(x) for x, _ in batches] == [3, 1]
    x = torch.cat([x for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    assert torch.equal(x.flatten(), torch.arange(20)) and torch.equal(y.flatten(), torch.arange(1, 21))


def test_a_missing_input_file_is_one_line_naming_it_and_the_download_command(tmp_path):
    with pytest.raises(DatasetError) as info:
        shakespeare.load_shakespeare(tmp_path)
    path = tmp_path / "shakespeare_char" / "input.txt"
    assert str(info.value) == (f"shakespeare data file {path}: missing; get it with 'hessian-lr data download "
                               f"shakespeare --data-dir {tmp_path}'")


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "empty"), (b"abc\xff\xfedef", "not UTF-8 text (byte 3)"),
    (b"x" * 30, "30 characters leave a split of 1, shorter than one window of context 8 plus its target"),
])
def test_an_unusable_input_file_is_one_line_naming_it(tmp_path, content, problem):
    path = write_shakespeare(tmp_path)
    path.write_bytes(content)
    with pytest.raises(DatasetError) as info:
        shakespeare.load_shakespeare(tmp_path, context=8)
    assert str(info.value).startswith(f"shakespeare data file {path}: {problem};")
