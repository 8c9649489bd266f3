"""Small workloads of the real-training contract, for the tests (importable by path as
``contract_workloads:NAME`` with this folder as the working directory).

* :data:`bn_dropout` — in-memory splits, an MLP with BatchNorm and dropout (one model at a time);
* :data:`loader_fed` — the same model fed by ``torch.utils.data.DataLoader``s (shuffled with the
  run's generator) whose dataset adds seeded noise per batch (augmentation from the generator's draw).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hessian_lr.workloads import Loaders, Splits, Workload


def _tensors(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, y


def splits() -> Splits:
    (x, y), (xv, yv), (xt, yt) = _tensors(96, 1), _tensors(40, 2), _tensors(40, 3)
    return Splits(x, y, xv, yv, xt, yt)


def bn_dropout_model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


bn_dropout = Workload(name="bn-dropout", description="test: BatchNorm + dropout MLP, 96 rows", load_data=splits,
                      build_model=bn_dropout_model, batch_size=16, epochs=3, eval_batch_size=16)

SEEN: list[torch.Tensor] = []  # every training batch's targets, in order (the tests read it)


class _Augmented:
    """A DataLoader over the training rows whose every batch gets noise drawn from the run's
    generator: the order and the augmentation both come from the run's seed."""

    def __init__(self, generator: torch.Generator) -> None:
        data = splits()
        self.generator = generator
        self.loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=16, shuffle=True,
                                 generator=generator)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            SEEN.append(y.clone())
            yield x + 0.1 * torch.randn(x.shape, generator=self.generator), y


def loaders() -> Loaders:
    data = splits()
    return Loaders(train=_Augmented,
                   val=lambda: DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=16),
                   test=lambda: DataLoader(TensorDataset(data.x_test, data.y_test), batch_size=16))


loader_fed = Workload(name="loader-fed", description="test: the BatchNorm + dropout MLP fed by DataLoaders",
                      load_data=loaders, build_model=bn_dropout_model, epochs=3)
