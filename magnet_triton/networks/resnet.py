"""ResNet building blocks and backbones in the torchvision layout (``conv1``, ``bn1``, ``layer1..4``).

The checkpoints of MagNet's ``fpn`` (ResNet-50) and ``psp`` (ResNet-101) store their backbones with
torchvision's key names, so these modules reproduce that layout exactly (without ``fc``): the stride of
a downsampling bottleneck sits on its 3x3 conv ("ResNet v1.5") and the stem is
conv7x7/2-BN-ReLU-maxpool3x3/2.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3 (strided, dilated), 1x1 expand by 4, plus a shortcut.

    Input B x ``in_channels`` x H x W, output B x 4*``planes`` x H/stride x W/stride, float32. A 1x1
    projection (``downsample``) is made when the stride or the channel count changes.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels, momentum=bn_momentum),
            )

    def residual_end_norms(self) -> tuple[str, ...]:
        """The BN whose output is added onto the shortcut (see ``checkpoint.random_state_dict``)."""
        return ("bn3",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_bottleneck_layer(in_channels: int, planes: int, blocks: int, *, stride: int = 1) -> nn.Sequential:
    """A stage of ``blocks`` bottlenecks; only the first one strides (and projects)."""
    layers = [Bottleneck(in_channels, planes, stride=stride)]
    for _ in range(1, blocks):
        layers.append(Bottleneck(planes * Bottleneck.expansion, planes))
    return nn.Sequential(*layers)


class ResNetBackbone(nn.Module):
    """Bottleneck ResNet without its classifier, returning the four stage outputs.

    Args:
        layers: blocks per stage, (3, 4, 6, 3) for ResNet-50, (3, 4, 23, 3) for ResNet-101.

    Forward input: B x 3 x H x W float32. Output: (c2, c3, c4, c5) with 256, 512, 1024, 2048 channels
    at strides 4, 8, 16, 32, float32. (Both MagNet ResNets, ``fpn`` and ``psp``, are undilated: the
    authors' outputs say so for ``psp``, see ``networks/psp.py``.)
    """

    def __init__(self, layers: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = make_bottleneck_layer(64, 64, layers[0])
        self.layer2 = make_bottleneck_layer(256, 128, layers[1], stride=2)
        self.layer3 = make_bottleneck_layer(512, 256, layers[2], stride=2)
        self.layer4 = make_bottleneck_layer(1024, 512, layers[3], stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5
