"""``fpn``: ResNet-50 with a feature pyramid, MagNet's DeepGlobe backbone.

Key names follow the authors' checkpoints: ``resnet_backbone.*`` (torchvision layout), ``toplayer``,
``latlayer1..3``, ``smooth{1..4}_{1,2}`` and ``classify``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from magnet_triton.networks.resnet import ResNetBackbone


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resize (half-pixel centres) of ``x`` to the spatial size of ``like``."""
    return F.interpolate(x, size=(like.shape[2], like.shape[3]), mode="bilinear", align_corners=False)


class ResNetFPN(nn.Module):
    """ResNet-50 FPN segmentation network.

    Args:
        num_classes: C.

    Forward input: B x 3 x H x W float32 (normalised RGB). Output: B x C x H x W logits, float32.

    The top-down path and the smoothing convs are purely linear: there is no BN and no ReLU between
    ``toplayer``/``latlayer*``, ``smooth*`` and ``classify``. ASSUMPTION: the key list cannot show
    activations; this follows the original FPN (Lin et al.) and the GLNet FPN head that this layout
    (``smooth{i}_1`` 256->256, ``smooth{i}_2`` 256->128, ``classify`` 3x3 on 512) comes from, rather
    than the conv-GN-ReLU of Panoptic-FPN's semantic branch (which would need norm keys).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.resnet_backbone = ResNetBackbone((3, 4, 6, 3))
        self.toplayer = nn.Conv2d(2048, 256, 1)
        self.latlayer1 = nn.Conv2d(1024, 256, 1)
        self.latlayer2 = nn.Conv2d(512, 256, 1)
        self.latlayer3 = nn.Conv2d(256, 256, 1)
        # Level i = 1..4 is p5, p4, p3, p2 (coarse to fine), as in the checkpoint names.
        self.smooth1_1 = nn.Conv2d(256, 256, 3, padding=1)
        self.smooth2_1 = nn.Conv2d(256, 256, 3, padding=1)
        self.smooth3_1 = nn.Conv2d(256, 256, 3, padding=1)
        self.smooth4_1 = nn.Conv2d(256, 256, 3, padding=1)
        self.smooth1_2 = nn.Conv2d(256, 128, 3, padding=1)
        self.smooth2_2 = nn.Conv2d(256, 128, 3, padding=1)
        self.smooth3_2 = nn.Conv2d(256, 128, 3, padding=1)
        self.smooth4_2 = nn.Conv2d(256, 128, 3, padding=1)
        self.classify = nn.Conv2d(4 * 128, num_classes, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        c2, c3, c4, c5 = self.resnet_backbone(image)
        p5 = self.toplayer(c5)
        lat4 = self.latlayer1(c4)
        p4 = _resize(p5, lat4) + lat4
        lat3 = self.latlayer2(c3)
        p3 = _resize(p4, lat3) + lat3
        lat2 = self.latlayer3(c2)
        p2 = _resize(p3, lat2) + lat2
        p5 = self.smooth1_2(self.smooth1_1(p5))
        p4 = self.smooth2_2(self.smooth2_1(p4))
        p3 = self.smooth3_2(self.smooth3_1(p3))
        p2 = self.smooth4_2(self.smooth4_1(p2))
        features = torch.cat([_resize(p5, p2), _resize(p4, p2), _resize(p3, p2), p2], dim=1)
        return _resize(self.classify(features), image)
