"""OCR head (object-contextual representations) and the full ``hrnet18+ocr`` / ``hrnet48+ocr`` network.

Key names follow the authors' checkpoints: ``conv3x3_ocr``, ``ocr_distri_head.object_context_block``,
``ocr_distri_head.conv_bn_dropout``, ``cls_head`` and ``aux_head``, next to the HRNet keys at the top
level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from magnet_triton.networks.hrnet import HRNET_CONFIGS, HRNetBackbone

_AUX_WEIGHT = 0.4


def _bn_relu(channels: int) -> nn.Sequential:
    # A nested Sequential, so that keys read ``<name>.1.0.weight`` as in the checkpoints.
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())


def _project(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv (no bias) then BN-ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), _bn_relu(out_channels))


def spatial_gather(features: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
    """Object-region representations: features averaged with per-class softmax weights over pixels.

    Args:
        features: B x D x h x w, float32.
        class_logits: B x K x h x w, float32 (the auxiliary head's soft object regions).

    Returns:
        B x D x K x 1, float32.
    """
    weights = torch.softmax(torch.flatten(class_logits, 2), dim=2)  # B x K x hw, softmax over pixels
    pixels = torch.flatten(features, 2).transpose(1, 2)  # B x hw x D
    return torch.matmul(weights, pixels).transpose(1, 2).unsqueeze(3)


class ObjectAttentionBlock(nn.Module):
    """Each pixel attends over the K object representations (scaled dot-product, one head).

    Forward: pixels B x D x h x w and objects B x D x K x 1 -> B x D x h x w context, float32.
    """

    def __init__(self, in_channels: int, key_channels: int) -> None:
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(
            *_project(in_channels, key_channels), *_project(key_channels, key_channels)
        )
        self.f_object = nn.Sequential(
            *_project(in_channels, key_channels), *_project(key_channels, key_channels)
        )
        self.f_down = _project(in_channels, key_channels)
        self.f_up = _project(key_channels, in_channels)

    def forward(self, pixels: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        query = torch.flatten(self.f_pixel(pixels), 2).transpose(1, 2)  # B x hw x Dk
        key = torch.flatten(self.f_object(objects), 2)  # B x Dk x K
        value = torch.flatten(self.f_down(objects), 2).transpose(1, 2)  # B x K x Dk
        similarity = torch.softmax(torch.matmul(query, key) * self.key_channels**-0.5, dim=-1)
        context = torch.matmul(similarity, value).transpose(1, 2)  # B x Dk x hw
        context = context.reshape(pixels.shape[0], self.key_channels, pixels.shape[2], pixels.shape[3])
        return self.f_up(context)


class SpatialOCR(nn.Module):
    """OCR distribution head: concat(context, pixels) -> 1x1 conv-BN-ReLU. B x D x h x w -> same, float32.

    The trained network has Dropout2d after this; it is the identity at inference and has no weights.
    """

    def __init__(self, in_channels: int, key_channels: int, out_channels: int) -> None:
        super().__init__()
        self.object_context_block = ObjectAttentionBlock(in_channels, key_channels)
        self.conv_bn_dropout = _project(2 * in_channels, out_channels)

    def forward(self, pixels: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        context = self.object_context_block(pixels, objects)
        return self.conv_bn_dropout(torch.cat([context, pixels], dim=1))


class HRNetOCR(HRNetBackbone):
    """HRNetV2 + OCR segmentation network (MagNet's Cityscapes backbone).

    Args:
        num_classes: C.
        width: 18 or 48 (branch widths width * (1, 2, 4, 8)).
        mid_channels, key_channels: OCR widths (512 and 256 in the checkpoints).

    Forward input: B x 3 x H x W float32 (normalised RGB). Output: B x C x H x W logits, float32,
    ``(out + 0.4 * aux) / 1.4`` with both heads upsampled (bilinear, align_corners=True).
    """

    def __init__(
        self, num_classes: int, width: int = 18, mid_channels: int = 512, key_channels: int = 256
    ) -> None:
        if width not in HRNET_CONFIGS:
            raise ValueError(f"no HRNet configuration for width {width}; known: {sorted(HRNET_CONFIGS)}")
        super().__init__(HRNET_CONFIGS[width])
        c = self.out_channels
        self.conv3x3_ocr = nn.Sequential(
            nn.Conv2d(c, mid_channels, 3, padding=1), nn.BatchNorm2d(mid_channels), nn.ReLU()
        )
        self.ocr_distri_head = SpatialOCR(mid_channels, key_channels, mid_channels)
        self.cls_head = nn.Conv2d(mid_channels, num_classes, 1)
        self.aux_head = nn.Sequential(
            nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, num_classes, 1)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[2], image.shape[3]
        feats = self.forward_features(image)
        aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        feats = self.ocr_distri_head(feats, spatial_gather(feats, aux))
        out = self.cls_head(feats)
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        aux = F.interpolate(aux, size=(h, w), mode="bilinear", align_corners=True)
        return (out + _AUX_WEIGHT * aux) / (1.0 + _AUX_WEIGHT)
