"""``roi_align`` with torchvision's semantics (``aligned=False``, ``spatial_scale=1``, ``sampling_ratio=-1``).

The CPU machines have no torchvision ops, and MagNet's parity depends on the details (a whole-patch
box samples at half-pixel offsets, so a plain crop is half a pixel off), hence our own version.

The bilinear sampling of torchvision is separable: the value at (y, x) is a weighted sum over two rows
times a weighted sum over two columns, and the out-of-range rule (zero when y < -1, y > H, x < -1 or
x > W) is a product of a row and a column condition. So each output row is a fixed combination of at
most ``2 * gh`` input rows, and each output column of ``2 * gw`` input columns. We gather those rows,
then those columns, each within the box's own columns: the cost is proportional to the output, not
to the input.
"""

from __future__ import annotations

import math

import torch


def _axis_weights(
    start: float, length: float, out_len: int, in_len: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices and weights, each ``out_len x (2 * samples)``, for one axis of one box.

    Output element i averages ``samples`` bilinear taps at ``start + i*bin + (s + 0.5) * bin / samples``.
    The coordinates are computed in ``dtype`` in torchvision's order of operations: with float32 maps
    its coordinates carry float32 rounding (612 / 508 is not exact), and at steep gradients that shows.
    The weights include the 1 / samples of the average.
    """
    length = max(length, 1.0)
    samples = math.ceil(length / out_len)
    start_t = torch.tensor(start, dtype=dtype)
    bin_size = torch.tensor(length, dtype=dtype) / out_len
    i = torch.arange(out_len, dtype=dtype)[:, None]
    s = torch.arange(samples, dtype=dtype)[None, :]
    coord = start_t + i * bin_size + (s + 0.5) * bin_size / samples  # out_len x samples

    inside = (coord >= -1.0) & (coord <= in_len)
    coord = coord.clamp(min=0.0)
    low = coord.floor().to(torch.int64)
    at_edge = low >= in_len - 1
    low = torch.where(at_edge, torch.full_like(low, in_len - 1), low)
    high = torch.where(at_edge, low, low + 1)
    coord = torch.where(at_edge, low.to(dtype), coord)
    frac = coord - low.to(dtype)
    scale = inside.to(dtype) / samples
    index = torch.cat([low, high], dim=1)
    weight = torch.cat([(1.0 - frac) * scale, frac * scale], dim=1)
    return index, weight


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """Average-pooled bilinear crops of ``features`` (torchvision ``roi_align`` semantics).

    Args:
        features: 1 x C x H x W (or C x H x W), floating point, any device.
        boxes: K x 4 float boxes ``(x0, y0, x1, y1)`` in pixels of ``features``.
        output_size: ``(ph, pw)``.

    Returns:
        K x C x ph x pw, same dtype and device as ``features``.
    """
    if features.dim() == 4:
        if features.shape[0] != 1:
            raise ValueError(f"roi_align takes one image (1 x C x H x W), got {tuple(features.shape)}")
        features = features[0]
    channels, height, width = features.shape
    out_h, out_w = output_size
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4).cpu()
    out = features.new_empty((boxes.shape[0], channels, out_h, out_w))
    coord_dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        row_index, row_weight = _axis_weights(y0, y1 - y0, out_h, height, coord_dtype)
        col_index, col_weight = _axis_weights(x0, x1 - x0, out_w, width, coord_dtype)
        # Only the columns the box reads: the row pass then costs the box's width, not the map's.
        first_col, last_col = int(col_index.min()), int(col_index.max())
        col_index = col_index - first_col
        window = features[:, :, first_col : last_col + 1]
        rows = window[:, row_index.to(features.device).flatten(), :]  # C x (ph * 2gh) x w
        rows = rows.view(channels, out_h, -1, window.shape[2])
        row_weight = row_weight.to(features.device, features.dtype)
        rows = (rows * row_weight[None, :, :, None]).sum(dim=2)  # C x ph x W
        cols = rows[:, :, col_index.to(features.device).flatten()].view(channels, out_h, out_w, -1)
        col_weight = col_weight.to(features.device, features.dtype)
        out[k] = (cols * col_weight[None, None, :, :]).sum(dim=3)
    return out
