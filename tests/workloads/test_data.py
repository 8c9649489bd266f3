import numpy as np
import torch

from hessian_lr.workloads import get_workload
from hessian_lr.workloads.data import load_mnist1d, mnist1d_splits


def test_mnist1d_is_built_offline_and_cached(tmp_path):
    first = load_mnist1d(tmp_path)
    cached = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(cached) == 1
    second = load_mnist1d(tmp_path)
    assert first["x"].shape == (4000, 40) and first["x_test"].shape == (1000, 40)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_corrupt_cache_is_rebuilt(tmp_path):
    load_mnist1d(tmp_path)
    path = next(tmp_path.glob("mnist1d-*.npz"))
    path.write_bytes(b"not an npz")
    assert load_mnist1d(tmp_path)["y"].shape == (4000,)


def test_splits_are_disjoint_float32_and_leave_test_untouched(tmp_path):
    raw = load_mnist1d(tmp_path)
    splits = mnist1d_splits(cache=tmp_path)
    assert splits.x_train.shape == (3500, 40) and splits.x_val.shape == (500, 40)
    assert splits.x_train.dtype == torch.float32 and splits.y_train.dtype == torch.int64
    np.testing.assert_array_equal(splits.x_test.numpy(), raw["x_test"].astype(np.float32))
    train_rows = {tuple(r) for r in splits.x_train.numpy().round(6)}
    val_rows = {tuple(r) for r in splits.x_val.numpy().round(6)}
    assert not train_rows & val_rows
    assert splits.num_classes == 10


def test_default_model_is_the_40_100_100_10_mlp():
    model = get_workload("mnist1d-mlp").build_model()
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(100, 40), (100,), (100, 100), (100,), (10, 100), (10,)]
    assert sum(p.numel() for p in model.parameters()) == 15210


def test_cache_hit_does_not_import_the_mnist1d_package(tmp_path):
    import subprocess
    import sys

    load_mnist1d(tmp_path)
    code = ("import sys; from pathlib import Path; from hessian_lr.workloads.data import load_mnist1d; "
            f"data = load_mnist1d(Path({str(tmp_path)!r})); "
            "print(data['x'].shape, 'mnist1d.data' in sys.modules, sorted(data))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(4000, 40) False ['x', 'x_test', 'y', 'y_test']"
