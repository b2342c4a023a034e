"""Patch grids and box arithmetic (pure Python/numpy, no torch).

Boxes are ``(x0, y0, x1, y1)``; sizes are ``(width, height)``. See ``magnet-spec.md`` "Image preparation".
"""

from __future__ import annotations

import math

import numpy as np

Box = tuple[int, int, int, int]


def _grid_axis(length: int, crop: int) -> tuple[int, int]:
    """Number of patches and their step along one axis (the spec's formula, truncation included)."""
    count = math.ceil(length / crop)
    step = int(crop - (count * crop - length) / max(count - 1, 1))
    return count, step


def patch_grid(size: tuple[int, int], crop: tuple[int, int]) -> list[Box]:
    """Pixel boxes of the patches that cover a ``size`` image with ``crop`` patches, x outer and y inner.

    Neighbouring patches overlap when the crop does not divide the size; the last one ends at the edge
    (up to the truncation of the step, which the authors' grid also has).
    """
    (width, height), (crop_w, crop_h) = size, crop
    if crop_w > width or crop_h > height:
        raise ValueError(f"crop {crop_w}x{crop_h} is larger than the image {width}x{height}")
    n_x, step_x = _grid_axis(width, crop_w)
    n_y, step_y = _grid_axis(height, crop_h)
    return [
        (x * step_x, y * step_y, x * step_x + crop_w, y * step_y + crop_h)
        for x in range(n_x)
        for y in range(n_y)
    ]


def patch_ratios(size: tuple[int, int], crop: tuple[int, int]) -> np.ndarray:
    """The patch boxes of :func:`patch_grid` divided by ``(W, H, W, H)``: K x 4, float64."""
    width, height = size
    boxes = np.asarray(patch_grid(size, crop), dtype=np.float64)
    return boxes / np.array([width, height, width, height], dtype=np.float64)


def ratios_to_pixels(ratios: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Ratio boxes (K x 4) scaled to a ``size`` image, as floats (step 2 of the loop)."""
    width, height = size
    return np.asarray(ratios, dtype=np.float64) * np.array([width, height, width, height], dtype=np.float64)


def round_boxes(ratios: np.ndarray, size: tuple[int, int]) -> list[Box]:
    """Ratio boxes rounded to whole pixels of a ``size`` image (``round(ratio * size)``, step 9).

    Python's ``round`` (half to even) is what the authors' code applies; MagNet's boxes land on whole
    pixels anyway.
    """
    return [tuple(round(v) for v in box) for box in ratios_to_pixels(ratios, size).tolist()]  # type: ignore[misc]


def shrink_box(box: Box, margin: int) -> Box:
    """``box`` with ``margin`` pixels taken off each side (it may become empty)."""
    x0, y0, x1, y1 = box
    return (x0 + margin, y0 + margin, x1 - margin, y1 - margin)
