"""The mnist1d paper's small CNN (``ConvBase``)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Mnist1dCNN"]


class Mnist1dCNN(nn.Module):
    """The mnist1d paper's ``ConvBase`` (Greydanus 2020, https://github.com/greydanus/mnist1d,
    ``notebooks/models.py``): three strided 1-D convolutions (25 channels, kernels 5/3/3, stride 2,
    padding 1; length 40 -> 19 -> 10 -> 5) with ReLU, then a linear layer 125 -> 10 (5,210
    parameters). The paper reports ~94% test accuracy after 6,000 Adam steps."""

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
