"""The ReLU MLP that several workloads build (mnist1d MLPs, the teacher and the student)."""

from __future__ import annotations

from torch import nn

__all__ = ["mlp"]


def mlp(widths: tuple[int, ...]) -> nn.Sequential:
    """ReLU MLP through ``widths`` (input, hidden..., output): ``Linear`` layers joined by ``ReLU``.

    An ``nn.Sequential`` of ``Linear``/``ReLU`` only, so the batched engine's fast MLP path and the
    exact Gauss–Newton route both apply.
    """
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)
