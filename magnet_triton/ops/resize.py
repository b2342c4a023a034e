"""Resizes with exactly the semantics MagNet's numbers depend on.

- Images: OpenCV's bilinear resize on the uint8 image (``magnet-spec.md`` step 2 explains why not a float
  resize: its rounding alone moves about 8% of a coarse class map under random weights).
- Maps: PyTorch ``nearest`` (for the error map) and ``bilinear, align_corners=False`` (probabilities).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def nearest_source_indices(in_len: int, out_len: int) -> np.ndarray:
    """For each output position, the input position PyTorch's ``nearest`` resize reads (int64, out_len).

    ``min(floor(dst * scale), in - 1)`` with ``scale = in / out`` and the product both in float32, as in
    ATen; ``out == in`` is the identity and ``out == 2 * in`` uses ``dst >> 1``, also as in ATen. The
    float32 detail matters for ratios like 508 -> 2448.
    """
    dst = np.arange(out_len, dtype=np.int64)
    if out_len == in_len:
        return dst
    if out_len == 2 * in_len:
        return dst >> 1
    scale = np.float32(in_len) / np.float32(out_len)
    src = np.floor(dst.astype(np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_len - 1)


def resize_nearest(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """``x`` (... x H x W, any dtype) resized to ``out_hw`` with PyTorch ``nearest`` semantics."""
    in_h, in_w = x.shape[-2:]
    rows = torch.from_numpy(nearest_source_indices(in_h, out_hw[0])).to(x.device)
    cols = torch.from_numpy(nearest_source_indices(in_w, out_hw[1])).to(x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def resize_bilinear(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """N x C x H x W floating point resized with ``bilinear, align_corners=False`` (no anti-aliasing)."""
    if tuple(x.shape[-2:]) == tuple(out_hw):
        return x
    return F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H x W x 3 uint8 image resized to ``size = (W, H)`` with OpenCV ``INTER_LINEAR`` (uint8 result)."""
    import cv2  # the client must not need OpenCV, so import it where it is used

    width, height = size
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
