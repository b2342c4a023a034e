"""HRNetV2 backbone (the ``hrnet18`` / ``hrnet48`` part of ``hrnet18+ocr`` / ``hrnet48+ocr``).

Key names follow the authors' checkpoints (``conv1``, ``layer1``, ``transition1``, ``stage2.0.branches``,
``stage2.0.fuse_layers`` ...). Every interpolation uses ``align_corners=True``, as the networks were
trained with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from magnet_triton.networks.resnet import Bottleneck


@dataclass(frozen=True)
class HRNetConfig:
    """Depths and widths of one HRNetV2 variant.

    ``stage1_blocks`` bottlenecks of 64 planes; then stages 2-4 with ``modules`` high-resolution modules
    each, every branch holding ``branch_blocks`` basic blocks; branch widths ``width * (1, 2, 4, 8)``.
    """

    width: int
    stage1_blocks: int
    branch_blocks: int
    modules: tuple[int, int, int]

    @property
    def channels(self) -> tuple[int, int, int, int]:
        return (self.width, 2 * self.width, 4 * self.width, 8 * self.width)


# Read off the official key lists: W18 is the "small v2" variant (2 blocks everywhere), W48 the full one.
HRNET_CONFIGS: dict[int, HRNetConfig] = {
    18: HRNetConfig(width=18, stage1_blocks=2, branch_blocks=2, modules=(1, 3, 2)),
    48: HRNetConfig(width=48, stage1_blocks=4, branch_blocks=4, modules=(1, 4, 3)),
}


def _resize_ac(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` (HRNet-OCR's convention)."""
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=True)


def _conv_bn(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, relu: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with an identity shortcut. B x C x h x w -> B x C x h x w, float32."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def residual_end_norms(self) -> tuple[str, ...]:
        """The BN whose output is added onto the shortcut (see ``checkpoint.random_state_dict``)."""
        return ("bn2",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class HighResolutionModule(nn.Module):
    """Parallel branches of basic blocks, then every output branch fuses all input branches.

    Input and output: a list of tensors B x channels[i] x h_i x w_i (h_i halving per branch), float32.
    Fusing into branch i: a higher-resolution branch j < i goes through (i - j) stride-2 3x3 convs; a
    lower-resolution one through a 1x1 conv and a bilinear upsampling (align_corners=True).
    """

    def __init__(self, channels: tuple[int, ...], blocks: int) -> None:
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c) for _ in range(blocks))) for c in channels
        )
        self.fuse_layers = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    row.append(_conv_bn(channels[j], channels[i], 1, relu=False))
                elif j == i:
                    row.append(nn.Identity())  # no weights: keeps the checkpoint's indices
                else:
                    # Downsample by 2**(i-j); only the last conv changes the width and skips the ReLU.
                    steps = [_conv_bn(channels[j], channels[j], 3, stride=2) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], 3, stride=2, relu=False))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(row)
        self.relu = nn.ReLU()

    def residual_end_norms(self) -> tuple[str, ...]:
        """The last BN of every fuse path: its output is added onto the branch it fuses into."""
        names = []
        for i, row in enumerate(self.fuse_layers):
            for j, path in enumerate(row):
                norms = [n for n, m in path.named_modules() if isinstance(m, nn.BatchNorm2d)]
                if norms:
                    names.append(f"fuse_layers.{i}.{j}.{norms[-1]}")
        return tuple(names)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            h, w = xs[i].shape[2], xs[i].shape[3]
            y = xs[i]
            for j, fuse in enumerate(row):
                if j > i:
                    y = y + _resize_ac(fuse(xs[j]), h, w)
                elif j < i:
                    y = y + fuse(xs[j])
            out.append(self.relu(y))
        return out


def _transition(previous: tuple[int, ...], current: tuple[int, ...]) -> nn.ModuleList:
    """Branch adapters between stages: a 3x3 conv where a width changes, a new stride-2 branch at the end."""
    layers = nn.ModuleList()
    for i, c in enumerate(current):
        if i < len(previous):
            layers.append(_conv_bn(previous[i], c, 3) if previous[i] != c else nn.Identity())
        else:
            # The new, half-resolution branch grows from the last existing one: Sequential(Sequential(...)).
            layers.append(nn.Sequential(_conv_bn(previous[-1], c, 3, stride=2)))
    return layers


class HRNetBackbone(nn.Module):
    """HRNetV2 features: the four branches upsampled to the finest and concatenated.

    Both stem convs have stride 1 (MagNet keeps full resolution), so the finest branch is at input
    resolution.

    Forward input: B x 3 x H x W float32. Output: B x 15*width x H x W float32.
    """

    def __init__(self, config: HRNetConfig) -> None:
        super().__init__()
        ch = config.channels
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(
            Bottleneck(64, 64), *(Bottleneck(256, 64) for _ in range(config.stage1_blocks - 1))
        )
        self.transition1 = _transition((256,), ch[:2])
        self.stage2 = self._stage(ch[:2], config.modules[0], config.branch_blocks)
        self.transition2 = _transition(ch[:2], ch[:3])
        self.stage3 = self._stage(ch[:3], config.modules[1], config.branch_blocks)
        self.transition3 = _transition(ch[:3], ch)
        self.stage4 = self._stage(ch, config.modules[2], config.branch_blocks)
        self.out_channels = sum(ch)

    @staticmethod
    def _stage(channels: tuple[int, ...], modules: int, blocks: int) -> nn.Sequential:
        return nn.Sequential(*(HighResolutionModule(channels, blocks) for _ in range(modules)))

    @staticmethod
    def _apply_transition(transition: nn.ModuleList, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        # A new branch (index past the old ones) is fed from the lowest-resolution existing branch.
        return [t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(transition)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W -> B x 15*width x H x W, float32 (the concatenated branches)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        xs = self.stage2(self._apply_transition(self.transition1, [x]))
        xs = self.stage3(self._apply_transition(self.transition2, xs))
        xs = self.stage4(self._apply_transition(self.transition3, xs))
        h, w = xs[0].shape[2], xs[0].shape[3]
        return torch.cat([xs[0], *(_resize_ac(t, h, w) for t in xs[1:])], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
