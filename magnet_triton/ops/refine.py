"""The refinement steps of one scale on tensors (``magnet-spec.md`` steps 3 and 9-15).

These are the reference (and CPU) versions; ``magnet_triton.kernels`` has CUDA versions that must give
identical results. All functions work on any device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from magnet_triton.ops.geometry import Box, shrink_box
from magnet_triton.ops.resize import resize_bilinear

#: Pixels taken off each side of a refined box before its points may replace the running prediction.
VALID_MASK_SHRINK = 10


def winner_and_margin(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The arg-max class and the top-1 minus top-2 probability over the class axis (C >= 2).

    N x C x H x W -> (N x H x W int64, N x H x W like ``probs``). Written as max, mask the winner, max
    again: the same values as ``topk(2)`` (a tie gives 0 either way) at about half its cost on the CPU,
    which matters on 19 x 2048 x 1024 maps; the winner is ``max``'s index (first maximum, as ``argmax``)
    and comes for free.
    """
    top1, winner = probs.max(dim=1, keepdim=True)
    runner_up = probs.scatter(1, winner, float("-inf")).amax(dim=1)
    return winner[:, 0], top1[:, 0] - runner_up


def margin(probs: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 probability over the class axis: N x C x H x W -> N x H x W (C >= 2)."""
    return winner_and_margin(probs)[1]


def uncertainty(probs: torch.Tensor) -> torch.Tensor:
    """``1 - margin`` of 1 x C x H x W probabilities: H x W."""
    return 1.0 - margin(probs)[0]


def paste_average(patches: torch.Tensor, boxes: Sequence[Box], out_hw: tuple[int, int]) -> torch.Tensor:
    """Average K x C x h x w patch predictions into a C x H x W canvas (step 9).

    Each patch is resized (bilinear) to its whole-pixel box; overlaps are averaged; pixels no box covers
    stay 0. (The authors' code overwrites overlaps instead: no preset has any, see the spec.)
    """
    height, width = out_hw
    channels = patches.shape[1]
    canvas = patches.new_zeros((channels, height, width))
    count = patches.new_zeros((1, height, width))
    for patch, (x0, y0, x1, y1) in zip(patches, boxes):
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        resized = resize_bilinear(patch[None], (y1 - y0, x1 - x0))[0]
        canvas[:, cy0:cy1, cx0:cx1] += resized[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        count[:, cy0:cy1, cx0:cx1] += 1
    return canvas / count.clamp(min=1)


def valid_mask(
    boxes: Sequence[Box], out_hw: tuple[int, int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """H x W bool: the union of the boxes, each shrunk by :data:`VALID_MASK_SHRINK` pixels per side."""
    height, width = out_hw
    mask = torch.zeros((height, width), dtype=torch.bool, device=device)
    for box in boxes:
        x0, y0, x1, y1 = shrink_box(box, VALID_MASK_SHRINK)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return mask


def error_score(refined: torch.Tensor, uncert: torch.Tensor, zero_where: torch.Tensor | None) -> torch.Tensor:
    """``E = margin(R) * U`` (step 10): C x H x W and H x W -> H x W.

    ``zero_where`` (H x W bool or None) marks pixels whose score is forced to 0: outside the valid mask in
    MagNet-Fast, inside it under ``patch_order: official`` (the authors' code), nowhere in full MagNet.
    """
    score = margin(refined[None])[0] * uncert
    if zero_where is not None:
        score = score.masked_fill(zero_where, 0.0)
    return score


def point_count(n_points: float, size: tuple[int, int], n_selected: int, n_patches_total: int) -> int:
    """How many points of a ``size = (W, H)`` scale are replaced (step 12)."""
    width, height = size
    if n_points > 1:
        return min(int(n_points), math.floor(width * height * n_selected / n_patches_total))
    return int(width * height * n_points * n_selected / n_patches_total)


def replace_points(probs: torch.Tensor, refined: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Copy all C channels of ``refined`` (C x H x W) into ``probs`` (1 x C x H x W) at flat ``indices``.

    Works in place on ``probs`` and returns it.
    """
    channels = probs.shape[1]
    flat = probs.view(channels, -1)
    flat[:, indices] = refined.reshape(channels, -1)[:, indices]
    return probs
