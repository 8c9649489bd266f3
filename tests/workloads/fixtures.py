"""Small data sets written in the real on-disk formats, for the readers' and the workloads' tests.

CIFAR-10: ``cifar-10-batches-py/`` with ``data_batch_1`` … ``data_batch_5``, ``test_batch`` and
``batches.meta``, each a protocol-2 pickle of the dict the real files hold (``b"data"`` uint8
``[N, 3072]`` channel-major, ``b"labels"`` a list of ints, ``b"filenames"``, ``b"batch_label"``);
Shakespeare: ``shakespeare_char/input.txt``. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from hessian_lr.workloads import cifar10

CIFAR_FOLDER = "cifar-10-batches-py"
LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]

SHAKESPEARE_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
    "First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n\n"
    "All:\nWe know't, we know't.\n\nFirst Citizen:\nLet us kill him, and we'll have corn at our own price.\n"
)


def cifar_images(count: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """``count`` random uint8 images as the files store them (``[count, 3072]``) and their labels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 3072), dtype=np.uint8), rng.integers(0, 10, count).tolist()


def write_cifar_file(path: Path, data: np.ndarray, labels: list[int], name: str = "fixture") -> None:
    """One CIFAR-10 batch pickle at ``path`` (any ``data``: the corrupt-file tests write wrong ones)."""
    if data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072:
        cifar10.write_batch_file(path, data, labels, name)
        return
    entry = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
    path.write_bytes(pickle.dumps(entry, protocol=2))


def write_cifar10(root: Path, per_file: int = 60, test: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """A CIFAR-10 folder under ``root`` (``5·per_file`` training and ``test`` test images).

    Returns:
        ``{"train_data", "train_labels", "test_data", "test_labels"}``: what was written, the
        training files concatenated in order (data as ``[N, 3072]`` uint8).
    """
    folder = root / CIFAR_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    train_data, train_labels = [], []
    for i in range(1, 6):
        data, labels = cifar_images(per_file, seed + i)
        write_cifar_file(folder / f"data_batch_{i}", data, labels, f"training batch {i} of 5")
        train_data.append(data)
        train_labels += labels
    test_data, test_labels = cifar_images(test, seed + 100)
    write_cifar_file(folder / "test_batch", test_data, test_labels, "testing batch 1 of 1")
    meta = {b"num_cases_per_batch": per_file, b"label_names": LABEL_NAMES, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {"train_data": np.concatenate(train_data), "train_labels": np.array(train_labels),
            "test_data": test_data, "test_labels": np.array(test_labels)}


def cifar10_archive(root: Path, per_file: int = 20, test: int = 20) -> tuple[bytes, str]:
    """A ``cifar-10-python.tar.gz`` of a fixture folder, as bytes, and its md5."""
    source = root / "archive-source"
    write_cifar10(source, per_file=per_file, test=test)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / CIFAR_FOLDER, arcname=CIFAR_FOLDER)
    payload = buffer.getvalue()
    return payload, hashlib.md5(payload).hexdigest()


def write_shakespeare(root: Path, text: str = SHAKESPEARE_TEXT) -> Path:
    """``root/shakespeare_char/input.txt`` holding ``text``; returns its path."""
    path = root / "shakespeare_char" / "input.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path
