"""The standard workloads on real data (cifar10-resnet18, cifar10-3c3d, shakespeare-char-gpt) built on
fixture files in the real formats: their streams, budgets, models and one-line data errors."""

from __future__ import annotations

import math

import pytest
import torch
from fixtures import SHAKESPEARE_TEXT, write_cifar10, write_shakespeare

from hessian_lr.workloads import cifar10, standard
from hessian_lr.workloads.data import Loaders
from hessian_lr.workloads.datadir import DatasetError


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, per_file=230, test=300)  # 1,150 training images: 1,035 train, 115 validation
    return root


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    write_shakespeare(root, SHAKESPEARE_TEXT * 40)
    return root


def _batches(stream):
    return [(x.clone(), y.clone()) for x, y in stream]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def test_cifar_streams_are_fixed_by_the_run_generator_and_each_epoch_draws_anew(cifar_dir):
    loaders = standard.cifar10_loaders(128, cifar_dir, eval_batch_size=50)
    assert isinstance(loaders, Loaders) and loaders.epoch_length() == 1_035 // 128
    first = loaders.train(torch.Generator().manual_seed(3))
    again = loaders.train(torch.Generator().manual_seed(3))
    other = loaders.train(torch.Generator().manual_seed(4))
    epoch1, epoch2 = _batches(first), _batches(first)
    assert len(epoch1) == len(first) == 8 and epoch1[0][0].shape == (128, 3, 32, 32)
    assert _same(epoch1, _batches(again)) and _same(epoch2, _batches(again))  # same seed, same epochs
    assert not torch.equal(epoch1[0][0], epoch2[0][0]) and not torch.equal(epoch1[0][0], _batches(other)[0][0])


def test_cifar_evaluation_streams_cover_validation_and_test_in_order(cifar_dir):
    loaders = standard.cifar10_loaders(128, cifar_dir, eval_batch_size=50)
    splits = cifar10.load_cifar10(cifar_dir)
    val, test = _batches(loaders.val()), _batches(loaders.test())
    assert [len(y) for _, y in val] == [50, 50, 15] and sum(len(y) for _, y in test) == 300
    assert torch.equal(torch.cat([y for _, y in val]), splits.val.labels)
    assert _same(val, _batches(loaders.val()))


def test_the_resnet18_workload_is_algoperfs_cifar10_workload(cifar_dir):
    work = standard.cifar10_resnet18(cifar_dir)
    assert (work.name, work.batch_size, work.steps, work.eval_every) == ("cifar10-resnet18", 1024, 4883, 600)
    assert [m.name for m in work.metrics] == ["steps_to_target"]
    assert work.reference.value == 0.85 and "AlgoPerf" in work.reference.source
    assert work.data.epoch_length() == 1
    torch.manual_seed(0)
    model = work.build_model()
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    x, y = next(iter(work.data.val()))
    with torch.no_grad():
        loss = work.loss_fn(model.eval()(x[:8]), y[:8])
    assert math.isfinite(float(loss))


def test_the_3c3d_workload_takes_deepobs_batch_and_l2_and_one_step_lowers_its_batch_loss(cifar_dir):
    work = standard.cifar10_3c3d(cifar_dir)
    assert (work.name, work.batch_size, work.l2) == ("cifar10-3c3d", 128, 0.002)
    assert (work.epochs, work.steps, work.eval_every) == (1, None, None)
    assert work.data.epoch_length() == 1_035 // 128
    torch.manual_seed(0)
    model = work.build_model()
    x, y = next(iter(work.data.train(torch.Generator().manual_seed(0))))
    assert x.shape == (128, 3, 32, 32)
    x, y = x[:16], y[:16]  # one step on a slice: a full batch costs seconds on a busy CPU
    before = work.objective(model, x, y)
    before.backward()
    with torch.no_grad():  # one SGD step, lr 0.01
        for p in model.parameters():
            p -= 0.01 * p.grad
    assert float(work.objective(model, x, y).detach()) < float(before.detach())


@pytest.mark.parametrize("size", ["reference", "cpu"])
def test_the_gpt_workloads_read_the_vocabulary_and_windows_from_the_text(text_dir, size):
    work = standard.shakespeare_char_gpt(size, text_dir)
    budget = standard.GPT_SIZES[size]
    assert (work.batch_size, work.steps, work.eval_every) == (budget["batch_size"], budget["steps"], 250)
    assert [m.name for m in work.metrics] == ["val_bits_per_char"]
    context = 256 if size == "reference" else 64
    train_tokens = int(len(SHAKESPEARE_TEXT) * 40 * 0.9)
    assert work.data.epoch_length() == math.ceil(train_tokens / (budget["batch_size"] * context))
    stream = work.data.train(torch.Generator().manual_seed(0))
    x, y = next(iter(stream))
    assert x.shape == y.shape == (budget["batch_size"], context) and torch.equal(x[:, 1:], y[:, :-1])
    torch.manual_seed(0)
    model = work.build_model().eval()
    assert model.lm_head.out_features == len(set(SHAKESPEARE_TEXT))
    with torch.no_grad():
        loss = work.loss_fn(model(x[:2]), y[:2])
    # an untrained GPT predicts nearly uniformly: loss ≈ ln(vocab)
    assert float(loss) == pytest.approx(math.log(len(set(SHAKESPEARE_TEXT))), abs=0.2)
    val = list(work.data.val())
    assert sum(len(x) for x, _ in val) == (int(len(SHAKESPEARE_TEXT) * 40 * 0.95) - train_tokens - 1) // context


def test_a_batch_larger_than_the_training_images_is_one_line(cifar_dir):
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 1035\] \(the CIFAR-10 training images"):
        standard.cifar10_loaders(2048, cifar_dir)


def test_an_unknown_gpt_size_is_refused():
    with pytest.raises(ValueError, match="size must be one of reference, cpu, got 'tiny'"):
        standard.shakespeare_char_gpt("tiny")


def test_a_workload_without_its_data_fails_with_the_download_command_when_its_data_are_read(tmp_path):
    work = standard.cifar10_3c3d(tmp_path)  # building the workload reads nothing
    with pytest.raises(DatasetError, match=f"get it with 'hessian-lr data download cifar10 --data-dir {tmp_path}'"):
        work.load_data()
    with pytest.raises(DatasetError, match="hessian-lr data download shakespeare"):
        standard.shakespeare_char_gpt("cpu", tmp_path).load_data()


def test_sequence_cross_entropy_is_the_mean_over_every_position():
    logits = torch.randn(2, 3, 5)
    targets = torch.randint(0, 5, (2, 3))
    each = [torch.nn.functional.cross_entropy(logits[b, t:t + 1], targets[b, t:t + 1]) for b in range(2) for t in range(3)]
    assert torch.allclose(standard.sequence_cross_entropy(logits, targets), torch.stack(each).mean())
