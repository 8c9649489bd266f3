"""The CIFAR-10 reader, AlgoPerf's split, and the whole-batch crop/flip, on fixture files in the real format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from fixtures import CIFAR_FOLDER, cifar_images, write_cifar10, write_cifar_file

from hessian_lr.workloads import cifar10
from hessian_lr.workloads.datadir import DATA_ENV, DatasetError


@pytest.fixture
def written(tmp_path):
    return tmp_path, write_cifar10(tmp_path, per_file=60, test=100)


def test_the_reader_returns_the_files_images_channel_major_and_splits_them_as_algoperf(written):
    root, arrays = written
    splits = cifar10.load_cifar10(root)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (270, 30, 100)
    images = arrays["train_data"].reshape(-1, 3, 32, 32)
    # the first 90% of the training files in file order train, the last 10% validate
    assert torch.equal(splits.train.images, torch.from_numpy(images[:270]))
    assert torch.equal(splits.val.images, torch.from_numpy(images[270:]))
    assert torch.equal(splits.val.labels, torch.from_numpy(arrays["train_labels"][270:]))
    assert torch.equal(splits.test.images, torch.from_numpy(arrays["test_data"].reshape(-1, 3, 32, 32)))
    assert splits.train.images.dtype == torch.uint8 and splits.train.labels.dtype == torch.int64
    # channel-major rows of 32: value 1024 of a row is the green channel's top-left pixel
    assert splits.train.images[5, 1, 0, 0] == arrays["train_data"][5, 1024]
    assert splits.train.images[5, 2, 1, 3] == arrays["train_data"][5, 2048 + 32 + 3]


def test_the_data_folder_comes_from_the_environment_when_none_is_given(written, monkeypatch):
    root, _ = written
    monkeypatch.setenv(DATA_ENV, str(root))
    assert len(cifar10.load_cifar10().train) == 270


@pytest.mark.parametrize(("images", "validation"), [(50_000, 5_000), (300, 30), (10, 1), (19, 1), (123, 12)])
def test_the_split_rule_gives_algoperfs_45k_5k_for_the_real_files_and_works_for_any_size(images, validation):
    assert cifar10.validation_size(images) == validation


def test_fewer_than_ten_training_images_cannot_be_split():
    with pytest.raises(ValueError, match="9 images; the split needs at least 10"):
        cifar10.validation_size(9)


def _one_line_error(root) -> str:
    with pytest.raises(DatasetError) as info:
        cifar10.load_cifar10(root)
    message = str(info.value)
    assert "\n" not in message
    assert f"hessian-lr data download cifar10 --data-dir {root}" in message
    return message


def test_a_missing_batch_file_is_one_line_naming_it_and_the_download_command(written):
    root, _ = written
    (root / CIFAR_FOLDER / "data_batch_3").unlink()
    assert _one_line_error(root).startswith(f"cifar10 data file {root / CIFAR_FOLDER / 'data_batch_3'}: missing;")


def test_a_missing_data_folder_names_the_first_file(tmp_path):
    assert f"{tmp_path / CIFAR_FOLDER / 'data_batch_1'}: missing" in _one_line_error(tmp_path)


def test_a_truncated_pickle_is_one_line_naming_the_file(written):
    root, _ = written
    path = root / CIFAR_FOLDER / "test_batch"
    path.write_bytes(path.read_bytes()[:5000])
    assert f"{path}: not a readable CIFAR-10 pickle" in _one_line_error(root)


@pytest.mark.parametrize(("data", "labels", "problem"), [
    (np.zeros((4, 3072), np.float32), [0] * 4, "b'data' must be uint8 [N, 3072], got float32 [4, 3072]"),
    (np.zeros((4, 1024), np.uint8), [0] * 4, "b'data' must be uint8 [N, 3072], got uint8 [4, 1024]"),
    (np.zeros((4, 3072), np.uint8), [0] * 3, "one label per image (4), got shape [3]"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 10, 2], "labels must lie in [0, 9], got [0, 10]"),
])
def test_wrong_shapes_dtypes_and_labels_are_one_line_naming_the_file(written, data, labels, problem):
    root, _ = written
    path = root / CIFAR_FOLDER / "data_batch_2"
    write_cifar_file(path, data, labels)
    message = _one_line_error(root)
    assert str(path) in message and problem in message


def test_a_pickle_that_names_anything_but_numpy_is_refused_without_running_it(written):
    root, _ = written
    path = root / CIFAR_FOLDER / "data_batch_1"

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path.write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}, protocol=2))
    assert "names __builtin__.print, which a CIFAR-10 file never does" in _one_line_error(root)


def test_images_go_to_the_device_given(written):
    root, _ = written
    splits = cifar10.load_cifar10(root, device="meta")
    assert splits.train.images.device.type == "meta" and splits.test.labels.device.type == "meta"


# -- augmentation -----------------------------------------------------------------------------------

def _reference_crop_flip(images: np.ndarray, dy: int, dx: int, flip: bool) -> np.ndarray:
    """One image at a time, as torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip would."""
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4)))
    crop = padded[:, dy:dy + 32, dx:dx + 32]
    return crop[:, :, ::-1] if flip else crop


def test_crop_flip_matches_a_per_image_reference_for_every_offset_and_flip():
    images = torch.from_numpy(cifar_images(2 * 9 * 9, seed=3)[0].reshape(-1, 3, 32, 32))
    dy, dx, flip = torch.meshgrid(torch.arange(9), torch.arange(9), torch.arange(2), indexing="ij")
    dy, dx, flip = dy.reshape(-1), dx.reshape(-1), flip.reshape(-1).bool()
    out = cifar10.crop_flip(images, dy, dx, flip)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for b in range(len(images)):
        expected = _reference_crop_flip(images[b].numpy(), int(dy[b]), int(dx[b]), bool(flip[b]))
        assert np.array_equal(out[b].numpy(), expected), (int(dy[b]), int(dx[b]), bool(flip[b]))


def test_crop_flip_on_a_hand_made_image():
    image = torch.arange(1, 3 * 32 * 32 + 1).reshape(1, 3, 32, 32)  # every pixel distinct, none zero
    no, yes = torch.tensor([False]), torch.tensor([True])
    centre = torch.tensor([4])
    assert torch.equal(cifar10.crop_flip(image, centre, centre, no), image)  # offset 4 = no shift
    assert torch.equal(cifar10.crop_flip(image, centre, centre, yes), image.flip(-1))  # flips really flip
    corner = cifar10.crop_flip(image, torch.tensor([0]), torch.tensor([8]), no)
    # shifted 4 rows down (zeros on top) and 4 columns left (zeros on the right)
    assert torch.equal(corner[0, :, :4], torch.zeros(3, 4, 32, dtype=image.dtype))
    assert torch.equal(corner[0, :, :, 28:], torch.zeros(3, 32, 4, dtype=image.dtype))
    assert torch.equal(corner[0, :, 4:, :28], image[0, :, :28, 4:])
    assert corner[0, 1, 4, 0] == image[0, 1, 0, 4] == 1 + 1024 + 4
    flipped = cifar10.crop_flip(image, torch.tensor([0]), torch.tensor([8]), yes)
    assert torch.equal(flipped, corner.flip(-1))  # the flip comes after the crop


def test_every_crop_stays_inside_the_padded_image():
    images = torch.full((9, 3, 32, 32), 7, dtype=torch.uint8)
    shifts = torch.arange(9)
    out = cifar10.crop_flip(images, shifts, shifts.flip(0), torch.zeros(9, dtype=torch.bool))
    # a shift of s rows keeps 32 - |s - 4| of the image's rows; the rest is padding
    for b in range(9):
        kept = (32 - abs(int(shifts[b]) - 4)) * (32 - abs(8 - int(shifts[b]) - 4))
        assert int((out[b, 0] == 7).sum()) == kept and int((out[b, 0] == 0).sum()) == 32 * 32 - kept


def test_the_same_generator_seed_gives_the_same_epoch_and_another_seed_another():
    def epoch(seed):
        return cifar10.draw_epoch(500, torch.Generator().manual_seed(seed))

    a, b, c = epoch(1), epoch(1), epoch(2)
    for name in ("order", "shift_y", "shift_x", "flip"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.order, c.order) and not torch.equal(a.shift_x, c.shift_x)
    assert torch.equal(a.order.sort().values, torch.arange(500))
    assert 0 <= int(a.shift_y.min()) and int(a.shift_y.max()) == 8 and int(a.shift_x.max()) == 8
    assert 150 < int(a.flip.sum()) < 350


def test_normalize_uses_cifar10s_channel_mean_and_std():
    mean_pixel = torch.tensor([round(255 * m) for m in cifar10.MEAN], dtype=torch.uint8).view(1, 3, 1, 1)
    out = cifar10.normalize(mean_pixel.expand(2, 3, 4, 4))
    expected = torch.tensor([(round(255 * m) / 255 - m) / s for m, s in zip(cifar10.MEAN, cifar10.STD)])
    assert torch.allclose(out[0, :, 0, 0], expected, atol=1e-6) and out.abs().max() < 0.01
    black = cifar10.normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8))
    assert torch.allclose(black.flatten(), torch.tensor([-m / s for m, s in zip(cifar10.MEAN, cifar10.STD)]))
    assert out.dtype == torch.float32


def test_an_epoch_holds_every_image_once_in_the_drawn_order_and_drops_the_partial_batch(written):
    root, _ = written
    train = cifar10.load_cifar10(root).train
    draws = cifar10.draw_epoch(len(train), torch.Generator().manual_seed(0))
    batches = list(cifar10.train_batches(train, 64, draws, augment=False))
    assert len(batches) == 270 // 64
    assert all(x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
               for x, y in batches)
    order = draws.order[:4 * 64]
    assert torch.equal(torch.cat([x for x, _ in batches]), cifar10.normalize(train.images[order]))
    assert torch.equal(torch.cat([y for _, y in batches]), train.labels[order])


def test_augmented_batches_apply_the_drawn_crops_and_flips_and_a_resumed_epoch_skips_batches(written):
    root, _ = written
    train = cifar10.load_cifar10(root).train
    draws = cifar10.draw_epoch(len(train), torch.Generator().manual_seed(5))
    batches = list(cifar10.train_batches(train, 50, draws))
    rows = slice(50, 100)
    expected = cifar10.normalize(cifar10.crop_flip(train.images[draws.order[rows]], draws.shift_y[rows],
                                                   draws.shift_x[rows], draws.flip[rows]))
    assert torch.equal(batches[1][0], expected)
    resumed = list(cifar10.train_batches(train, 50, draws, start_batch=2))
    assert len(resumed) == len(batches) - 2
    assert all(torch.equal(x, bx) and torch.equal(y, by) for (x, y), (bx, by) in zip(resumed, batches[2:]))


def test_evaluation_batches_cover_the_split_in_order_with_a_smaller_last_batch(written):
    root, _ = written
    test = cifar10.load_cifar10(root).test
    batches = list(cifar10.eval_batches(test, 32))
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    assert torch.equal(torch.cat([x for x, _ in batches]), cifar10.normalize(test.images))
    assert torch.equal(torch.cat([y for _, y in batches]), test.labels)


def test_a_batch_size_outside_the_data_is_refused(written):
    root, _ = written
    train = cifar10.load_cifar10(root).train
    draws = cifar10.draw_epoch(len(train), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 270\]"):
        next(cifar10.train_batches(train, 271, draws))
