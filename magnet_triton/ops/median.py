"""Zero-padded k x k median filter (the smoothing of the error map, ``magnet-spec.md`` step 11)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def median_filter(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Median of each ``kernel x kernel`` window of ``x`` (H x W, float), padding with zeros.

    ``kernel`` is odd, so the window has an odd number of values and its median is one of them
    (no averaging of two middle values). Works on any device.
    """
    if kernel % 2 != 1 or kernel < 1:
        raise ValueError(f"median kernel must be a positive odd number, got {kernel}")
    if kernel == 1:
        return x.clone()
    pad = kernel // 2
    height, width = x.shape
    padded = F.pad(x[None, None], (pad, pad, pad, pad), mode="constant", value=0.0)[0, 0]
    # H x W x k x k view of every window; processed in row chunks to bound memory at large maps.
    windows = padded.unfold(0, kernel, 1).unfold(1, kernel, 1)
    out = torch.empty_like(x)
    rows_per_chunk = max(1, (1 << 22) // max(1, width * kernel * kernel))
    for r0 in range(0, height, rows_per_chunk):
        chunk = windows[r0 : r0 + rows_per_chunk].reshape(-1, width, kernel * kernel)
        out[r0 : r0 + rows_per_chunk] = chunk.median(dim=-1).values
    return out
