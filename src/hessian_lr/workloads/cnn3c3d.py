"""DeepOBS' 3c3d network for 32x32 RGB images (its ``cifar10_3c3d`` test problem).

Source: DeepOBS (Schneider, Balles & Hennig 2019, https://github.com/fsschneider/DeepOBS),
``deepobs/pytorch/testproblems/testproblems_modules.py:net_cifar10_3c3d``: three convolutions with
ReLU, each followed by a 3x3 stride-2 max-pool with TensorFlow's "same" padding — conv 5x5 → 64
("valid": 32 → 28, pool → 14), conv 3x3 → 96 ("valid": 14 → 12, pool → 6), conv 3x3 → 128 ("same":
6, pool → 3) — then dense layers 1,152 → 512 → 256 → 10 with ReLU between: 895,210 parameters.
Convolution weights Xavier-normal, dense weights Xavier-uniform, biases 0. The test problem adds an
L2 penalty of factor 0.002 on the weights (not the biases); the workload applies it.

A "same" max-pool of a 3x3 window at stride 2 pads only after the last row and column when the
input is even (TensorFlow puts the odd padding pixel at the end); ``ceil_mode=True`` takes exactly
those windows, without a padded copy.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ThreeC3D"]


class ThreeC3D(nn.Module):
    """DeepOBS' ``net_cifar10_3c3d`` (see the module docstring).

    Args:
        num_classes: read-out width (10 for CIFAR-10).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 5)
        self.conv2 = nn.Conv2d(64, 96, 3)
        self.conv3 = nn.Conv2d(96, 128, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.dense1 = nn.Linear(3 * 3 * 128, 512)
        self.dense2 = nn.Linear(512, 256)
        self.dense3 = nn.Linear(256, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(self.conv1(x).relu())
        h = self.pool(self.conv2(h).relu())
        h = self.pool(self.conv3(h).relu())
        h = self.dense2(self.dense1(h.flatten(1)).relu()).relu()
        return self.dense3(h)

    def weights(self) -> list[nn.Parameter]:
        """The parameters DeepOBS' L2 penalty covers: every weight, no bias."""
        return [p for name, p in self.named_parameters() if name.endswith("weight")]
