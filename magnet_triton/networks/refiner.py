"""The refinement network of MagNet (``RefinementMagNet``): merges a fine and a coarse prediction.

Key names follow the authors' checkpoints (``bn0``, ``conv1``, ``residual.N``, ``seg_conv``), so their
files load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from magnet_triton.networks.resnet import Bottleneck

# The authors train the refiner with a small BN momentum. It only matters in training mode, but keeping
# it makes fine-tuning behave like theirs. eps is PyTorch's default, 1e-5.
_BN_MOMENTUM = 0.01


class RefinementMagNet(nn.Module):
    """MagNet's refiner: logits for the merged prediction of one patch.

    Args:
        num_classes: C, the number of classes.

    Forward input: B x 2C x h x w, float32: fine probabilities (channels 0..C-1) then coarse
    probabilities (C..2C-1). Output: B x C x h x w logits, float32.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        in_channels = 2 * num_classes
        # Probabilities are in [0, 1] and skewed; bn0 learns a per-channel affine normalisation of them.
        self.bn0 = nn.BatchNorm2d(in_channels, momentum=_BN_MOMENTUM)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=_BN_MOMENTUM)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, momentum=_BN_MOMENTUM)
        self.relu = nn.ReLU()
        self.residual = nn.Sequential(
            Bottleneck(64, 32, bn_momentum=_BN_MOMENTUM),  # 64 -> 128, with a 1x1 projection
            Bottleneck(128, 32, bn_momentum=_BN_MOMENTUM),
        )
        self.seg_conv = nn.Conv2d(128, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn0(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.seg_conv(self.residual(x))
