"""``psp``: PSPNet on a plain ResNet-101 (output stride 32).

Key names follow the authors' checkpoints: ``feats.*`` (torchvision ResNet layout), ``psp.stages``,
``psp.bottleneck``, ``up_{1,2,3}.conv``, ``final`` and the auxiliary ``classifier``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from magnet_triton.networks.resnet import ResNetBackbone

_AUX_WEIGHT = 0.4


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


def _pooling_matrix(size: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """bins x size float matrix whose row i averages the cells [floor(i*size/bins), ceil((i+1)*size/bins))."""
    i = torch.arange(bins, device=like.device)
    start = (i * size) // bins
    end = ((i + 1) * size + bins - 1) // bins
    j = torch.arange(size, device=like.device)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


class AdaptiveAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d(bins)`` written as two matrix products, B x C x h x w -> B x C x bins x bins.

    Same bin boundaries as PyTorch, but it exports to ONNX for any h, w: the ONNX exporter refuses
    adaptive pooling whose output size does not divide the input size (508x508 DeepGlobe patches give
    64x64 features, which 3 and 6 do not divide).
    """

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _pooling_matrix(x.shape[2], self.bins, x)  # bins x h
        cols = _pooling_matrix(x.shape[3], self.bins, x)  # bins x w
        return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class PyramidPooling(nn.Module):
    """Pyramid pooling: average-pool to each bin size, 1x1 conv, upsample, concat with the input, 1x1.

    Input B x ``in_channels`` x h x w, output B x ``out_channels`` x h x w, float32 (after ReLU).
    """

    def __init__(
        self, in_channels: int = 2048, out_channels: int = 1024, bins: tuple[int, ...] = (1, 2, 3, 6)
    ) -> None:
        super().__init__()
        # Each stage keeps all channels (no 1/N reduction, no BN): that is what the checkpoint shapes say.
        self.stages = nn.ModuleList(
            nn.Sequential(AdaptiveAvgPool(b), nn.Conv2d(in_channels, in_channels, 1, bias=False))
            for b in bins
        )
        self.bottleneck = nn.Conv2d(in_channels * (len(bins) + 1), out_channels, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        priors = [_resize(stage(x), h, w) for stage in self.stages]
        return self.relu(self.bottleneck(torch.cat([*priors, x], dim=1)))


class PSPUpsample(nn.Module):
    """x2 bilinear upsampling then conv3x3-BN-PReLU. B x Cin x h x w -> B x Cout x 2h x 2w, float32."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_resize(x, 2 * x.shape[2], 2 * x.shape[3]))


class PSPNet(nn.Module):
    """PSPNet (ResNet-101) with an auxiliary classifier on the last ResNet stage.

    Args:
        num_classes: C.

    Forward input: B x 3 x H x W float32 (normalised RGB). Output: B x C x H x W logits, float32:
    ``(main + 0.4 * aux) / 1.4``, each upsampled (bilinear, align_corners=False) to H x W.

    Established by the authors' outputs (``shared/reference/network_outputs.npz``, a subset shipped in
    ``tests/reference``, reproduced to float64 round-off by ``tests/test_networks.py``), not by the key list, which cannot show strides: the ResNet is
    *not* dilated, so the pyramid pools the stride-32 features; the three x2 upsamplings reach stride 4
    and the final bilinear resize (like the auxiliary head's, from stride 32) does the rest. The
    dilated output-stride-8 variant of the pspnet-pytorch lineage, assumed before, is off by about half
    the largest logit. Dropout of that lineage is omitted (inference only).

    Sizes: any H, W >= 32; the ResNet's stride-2 steps round up, so the pyramid sees ceil(H / 32) rows
    (the 625 x 625 patches of the authors' published Gleason command give 20 x 20 features, 160 x 160
    after the upsamplings, then the resize to 625 x 625). ``tests/test_networks.py`` runs that size.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.feats = ResNetBackbone((3, 4, 23, 3))
        self.psp = PyramidPooling(2048, 1024, (1, 2, 3, 6))
        self.up_1 = PSPUpsample(1024, 256)
        self.up_2 = PSPUpsample(256, 64)
        self.up_3 = PSPUpsample(64, 64)
        self.final = nn.Conv2d(64, num_classes, 1)
        self.classifier = nn.Conv2d(2048, num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[2], image.shape[3]
        c5 = self.feats(image)[3]
        main = self.final(self.up_3(self.up_2(self.up_1(self.psp(c5)))))
        aux = self.classifier(c5)
        return (_resize(main, h, w) + _AUX_WEIGHT * _resize(aux, h, w)) / (1.0 + _AUX_WEIGHT)
