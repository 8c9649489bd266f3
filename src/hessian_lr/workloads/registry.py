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


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(sorted(WORKLOADS))}") from None
