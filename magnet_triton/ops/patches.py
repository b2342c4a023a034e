"""Cutting normalised network inputs out of an image (``magnet-spec.md`` step 4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from magnet_triton.networks.registry import IMAGENET, Normalization
from magnet_triton.ops.geometry import Box
from magnet_triton.ops.resize import resize_image


def cut_patches(
    image: np.ndarray | torch.Tensor,
    boxes: Sequence[Box],
    input_size: tuple[int, int],
    normalization: Normalization = IMAGENET,
) -> torch.Tensor:
    """Crops of an already scaled image, resized and normalised for the backbone.

    Args:
        image: H x W x 3 uint8 RGB, at the scale the boxes refer to: a numpy array (cut on the CPU with
            OpenCV) or a torch tensor (cut where it lives, with the same arithmetic).
        boxes: whole-pixel ``(x0, y0, x1, y1)`` boxes inside the image.
        input_size: ``(w, h)`` each crop is resized to (OpenCV bilinear on uint8, as the spec says).
        normalization: the backbone's (its registry entry's); every published backbone uses ImageNet's.

    Returns:
        K x 3 x h x w float32, on the CPU for a numpy image, else on the tensor's device:
        ``(crop / 255 - mean) / std``.
    """
    if isinstance(image, torch.Tensor):
        return _cut_patches_tensor(image, boxes, input_size, normalization)
    width, height = input_size
    mean, std = normalization.mean_array, normalization.std_array
    out = np.empty((len(boxes), 3, height, width), dtype=np.float32)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        crop = resize_image(np.ascontiguousarray(image[y0:y1, x0:x1]), input_size)
        pixels = crop.astype(np.float32) / 255.0
        out[k] = ((pixels - mean) / std).transpose(2, 0, 1)
    return torch.from_numpy(out)


def _cut_patches_tensor(
    image: torch.Tensor, boxes: Sequence[Box], input_size: tuple[int, int], normalization: Normalization
) -> torch.Tensor:
    mean = torch.from_numpy(normalization.mean_array).to(image.device)
    std = torch.from_numpy(normalization.std_array).to(image.device)
    crops = [image[y0:y1, x0:x1] for x0, y0, x1, y1 in boxes]
    if len({tuple(c.shape) for c in crops}) == 1:  # a scale's patches share a size: one resize for all
        resized = resize_image(torch.stack(crops), input_size)
    else:
        resized = torch.stack([resize_image(c, input_size) for c in crops])
    # The float32 division and subtraction in the numpy path's order, so both give the same floats.
    pixels = resized.to(torch.float32) / 255.0  # K x h x w x 3
    return ((pixels - mean) / std).permute(0, 3, 1, 2).contiguous()
