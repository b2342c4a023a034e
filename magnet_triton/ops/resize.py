"""Resizes with exactly the semantics MagNet's numbers depend on.

- Images: OpenCV's bilinear resize on the uint8 image (``magnet-spec.md`` step 2 explains why not a float
  resize: its rounding alone moves about 8% of a coarse class map under random weights). On a GPU the
  same fixed-point arithmetic runs in torch (:func:`resize_image_tensor`), bit-exact with OpenCV, so
  the image goes to the device once and every scale and patch is cut there.
- Maps: PyTorch ``nearest`` (for the error map) and ``bilinear, align_corners=False`` (probabilities).
"""

from __future__ import annotations

import functools

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


def resize_image(image: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray | torch.Tensor:
    """H x W x 3 uint8 image resized to ``size = (W, H)`` with OpenCV ``INTER_LINEAR`` (uint8 result).

    A numpy image goes through OpenCV; a torch tensor (on any device) through
    :func:`resize_image_tensor`, which computes the same values.
    """
    width, height = size
    if image.shape[-2] == width and image.shape[-3] == height:
        return image
    if isinstance(image, torch.Tensor):
        return resize_image_tensor(image, size)  # also ... x H x W x C: crops of one size at once
    import cv2  # the client must not need OpenCV, so import it where it is used

    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


# OpenCV's INTER_LINEAR on 8-bit images works in fixed point: 11-bit coefficients (2048 = 1.0), a
# horizontal pass into integers, then a vertical pass that drops 4 bits, multiplies by the 16-bit
# coefficient and keeps the high 16 bits of each product before rounding the sum to 8 bits.
_COEF_SCALE = 2048


def _linear_taps(in_len: int, out_len: int, clamp_weight: bool) -> tuple[np.ndarray, ...]:
    """(first source index, second source index, weight of the first, weight of the second), int64.

    Source position ``(dst + 0.5) * in / out - 0.5`` in float32. Horizontally OpenCV pins positions
    outside the image to its edge pixel with weight 1 (``clamp_weight``); vertically it keeps the
    fractional weight and clamps the row indices instead.
    """
    position = ((np.arange(out_len) + 0.5) * (in_len / out_len) - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = position - first
    if clamp_weight:
        below, above = first < 0, first >= in_len - 1
        fraction[below | above] = 0
        first[below] = 0
        first[above] = in_len - 1
    w0 = np.round((1 - fraction) * _COEF_SCALE).astype(np.int64)
    w1 = np.round(fraction * _COEF_SCALE).astype(np.int64)
    return np.clip(first, 0, in_len - 1), np.clip(first + 1, 0, in_len - 1), w0, w1


@functools.lru_cache(maxsize=64)
def _device_taps(in_len: int, out_len: int, clamp_weight: bool, device: str) -> tuple[torch.Tensor, ...]:
    """:func:`_linear_taps` as int64 indices and int32 weights on ``device``, made once per size pair
    (the pipeline resizes every patch of a scale with the same pair)."""
    first, second, w0, w1 = _linear_taps(in_len, out_len, clamp_weight)
    return tuple(torch.from_numpy(t).to(device) for t in (first, second)) + tuple(
        torch.from_numpy(w.astype(np.int32)).to(device) for w in (w0, w1)
    )


def resize_image_tensor(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """... x H x W x C uint8 tensor -> ... x h x w x C uint8, ``size = (w, h)``, equal to OpenCV
    ``INTER_LINEAR`` (leading dimensions: several crops of one size at once)."""
    width, height = size
    in_h, in_w = int(image.shape[-3]), int(image.shape[-2])
    device = str(image.device)
    x0, x1, a0, a1 = _device_taps(in_w, width, True, device)
    y0, y1, b0, b1 = _device_taps(in_h, height, False, device)
    pixels = image.to(torch.int32)
    rows = pixels.index_select(-2, x0) * a0[:, None] + pixels.index_select(-2, x1) * a1[:, None]
    top, bottom = rows.index_select(-3, y0) >> 4, rows.index_select(-3, y1) >> 4
    total = ((b0[:, None, None] * top) >> 16) + ((b1[:, None, None] * bottom) >> 16)
    return ((total + 2) >> 2).clamp_(0, 255).to(torch.uint8)
