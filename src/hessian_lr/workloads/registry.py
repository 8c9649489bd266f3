"""The workload registry. A workload knows its data, how to build its model and its loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from torch import Tensor, nn

from hessian_lr.workloads.data import Splits, mnist1d_splits

__all__ = ["Workload", "WORKLOADS", "get_workload", "mlp"]


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    load_data: Callable[[], Splits]
    build_model: Callable[[], nn.Module]
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy
    batch_size: int = 100
    epochs: int = 20

    @property
    def data(self) -> Splits:
        return _cached_data(self.load_data)


@lru_cache(maxsize=None)
def _cached_data(load: Callable[[], Splits]) -> Splits:
    return load()


def mlp(widths: tuple[int, ...]) -> nn.Sequential:
    """ReLU MLP through ``widths`` (input, hidden..., output)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


WORKLOADS: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    WORKLOADS[workload.name] = workload
    return workload


register(
    Workload(
        name="mnist1d-mlp",
        description="mnist1d (3,500 train / 500 val / 1,000 test), MLP 40-100-100-10, ReLU, cross-entropy",
        load_data=mnist1d_splits,
        build_model=lambda: mlp((40, 100, 100, 10)),
    )
)


class Mnist1dCNN(nn.Module):
    """The mnist1d paper's ``ConvBase``: three strided 1-D convolutions (25 channels, kernels 5/3/3,
    stride 2, padding 1; length 40 -> 19 -> 10 -> 5) with ReLU, then a linear layer 125 -> 10.
    The paper reports ~94% test accuracy after ~6000 Adam steps."""

    def __init__(self, channels: int = 25, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.linear = nn.Linear(channels * 5, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = x.unsqueeze(1)  # (batch, 40) -> (batch, 1, 40)
        h = self.conv1(h).relu()
        h = self.conv2(h).relu()
        h = self.conv3(h).relu()
        return self.linear(h.flatten(1))


register(
    Workload(
        name="mnist1d-cnn",
        description="mnist1d, the mnist1d paper's CNN (3 strided conv1d layers, 25 channels, then linear 125-10), "
        "cross-entropy",
        load_data=mnist1d_splits,
        build_model=Mnist1dCNN,
        epochs=30,
    )
)

register(
    Workload(
        name="mnist1d-deep-mlp",
        description="mnist1d, deep narrow MLP 40-64x8-10 (8 hidden ReLU layers, no normalisation): curvature "
        "differs by orders of magnitude between layers",
        load_data=mnist1d_splits,
        build_model=lambda: mlp((40,) + (64,) * 8 + (10,)),
    )
)


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(sorted(WORKLOADS))}") from None
