"""ResNet-18 for 32x32 images, as AlgoPerf's CIFAR-10 workload defines it.

Source: ``algoperf/workloads/cifar/cifar_pytorch/models.py`` (AlgoPerf, adapted there from
torchvision's ResNet): a 3x3 stride-1 stem convolution (64 channels, no bias) with BatchNorm and ReLU
and no max-pool, four stages of two basic blocks (64, 128, 256, 512 channels; stages 2-4 halve the
resolution in their first block, whose shortcut is a strided 1x1 convolution with BatchNorm), a 4x4
average pool and a linear read-out: 11,173,962 parameters for 10 classes.

Initialisation as AlgoPerf's ``reset_parameters``: every convolution LeCun-normal (a normal of
standard deviation ``sqrt(1/fan_in)/0.8796…`` through ``nn.init.trunc_normal_`` with its default
bounds ±2), BatchNorm weights 1 and biases 0, the last BatchNorm of each block's residual branch
zeroed (each block starts as the identity), the read-out weights N(0, 0.01²) and bias 0.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["BasicBlock", "ResNet18"]

# the standard deviation of a unit normal truncated to ±2, by which AlgoPerf (after JAX) divides
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def _lecun_normal_(conv: nn.Conv2d) -> None:
    fan_in = conv.weight[0].numel()
    nn.init.trunc_normal_(conv.weight, std=math.sqrt(1.0 / fan_in) / _TRUNCATED_NORMAL_STD)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut (identity, or 1x1 conv + BN when the shape
    changes), then ReLU.

    Args:
        inputs: input channels; outputs: output channels; stride: the first convolution's stride.
    """

    def __init__(self, inputs: int, outputs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.downsample: nn.Module | None = None
        if stride != 1 or inputs != outputs:
            self.downsample = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(outputs))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        h = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(h)) + shortcut).relu()


class ResNet18(nn.Module):
    """AlgoPerf's CIFAR ResNet-18 (see the module docstring).

    Args:
        num_classes: read-out width (10 for CIFAR-10).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths = (64, 128, 256, 512)
        stages, inputs = [], 64
        for stage, width in enumerate(widths):
            stride = 1 if stage == 0 else 2
            stages.append(nn.Sequential(BasicBlock(inputs, width, stride), BasicBlock(width, width)))
            inputs = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(widths[-1], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """AlgoPerf's initialisation (see the module docstring)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                _lecun_normal_(module)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.fc.weight, std=1e-2)
        nn.init.zeros_(self.fc.bias)
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn1(self.conv1(x)).relu()
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        h = nn.functional.avg_pool2d(h, 4).flatten(1)
        return self.fc(h)
