"""Cutting a raster too large for one request into overlapping windows, and where each one is kept.

Pure geometry (no I/O). Rows and columns are 0-based pixel offsets; sizes are ``(width, height)``
where a pair is given, as everywhere in the bundle. Neighbouring windows overlap by at least
``overlap`` pixels; each keeps its part up to the centre line of every overlap it shares, so every
pixel of the raster is kept by exactly one window and no kept pixel is nearer than ``overlap / 2`` to
its window's edge (where the edge is not the raster's own).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from magnet_triton.errors import MagnetError

Size = tuple[int, int]


@dataclass(frozen=True)
class Window:
    """One window: the pixels read and sent (``row``, ``col``, ``height``, ``width``) and the part of
    its answer kept in the stitched map (``keep_*``, in raster coordinates, inside the window)."""

    index: int
    row: int
    col: int
    height: int
    width: int
    keep_row: int
    keep_col: int
    keep_height: int
    keep_width: int

    @property
    def keep_slices(self) -> tuple[slice, slice]:
        """(rows, cols) of the kept part inside the window's own H x W answer."""
        top, left = self.keep_row - self.row, self.keep_col - self.col
        return slice(top, top + self.keep_height), slice(left, left + self.keep_width)

    @property
    def pixels(self) -> int:
        return self.height * self.width


@dataclass(frozen=True)
class TilePlan:
    """The windows of one raster, row by row, and the geometry they came from."""

    height: int
    width: int
    window_size: Size
    overlap: int
    windows: tuple[Window, ...]

    @property
    def tiled(self) -> bool:
        return len(self.windows) > 1

    @property
    def grid(self) -> Size:
        """(columns, rows) of windows."""
        cols = len({w.col for w in self.windows})
        return cols, len(self.windows) // cols


def window_size_for(height: int, width: int, max_pixels: int) -> Size:
    """The largest window (width, height) of at most ``max_pixels`` for an H x W raster: the raster
    itself when it fits, else a square, or a band as long as the raster where one side is short."""
    if max_pixels < 1:
        raise MagnetError(f"the pixel limit must be >= 1, got {max_pixels}")
    if height * width <= max_pixels:
        return width, height
    side = math.isqrt(max_pixels)
    if height <= side:
        return min(width, max_pixels // height), height
    if width <= side:
        return width, min(height, max_pixels // width)
    return side, side


def _starts(length: int, window: int, overlap: int) -> list[int]:
    """Window starts along one axis: as few windows as keep every overlap >= ``overlap``, spread
    evenly so the overlaps are alike."""
    if window >= length:
        return [0]
    count = math.ceil((length - overlap) / (window - overlap))
    step = (length - window) / (count - 1)
    return [round(i * step) for i in range(count)]


def _keeps(starts: Sequence[int], window: int, length: int) -> list[tuple[int, int]]:
    """(start, stop) kept by each window along one axis: cut at the middle of each overlap."""
    cuts = [0]
    for here, following in itertools.pairwise(starts):
        cuts.append((following + min(here + window, length)) // 2)
    cuts.append(length)
    return list(itertools.pairwise(cuts))


def plan_windows(
    height: int, width: int, *, max_pixels: int, overlap: int, window_size: Size | None = None
) -> TilePlan:
    """The windows that cover an H x W raster with requests of at most ``max_pixels`` each.

    Args:
        height, width: the raster's size in pixels.
        max_pixels: the server's limit per image.
        overlap: the least overlap between neighbouring windows, in pixels; reduced (to a quarter of
            the window's short side) when the windows are too small for it, since each window must
            keep a part of its own.
        window_size: (width, height) of the windows; None: :func:`window_size_for`.

    Raises:
        MagnetError: a window over the limit, or a negative overlap.
    """
    if height < 1 or width < 1:
        raise MagnetError(f"the raster has no pixels ({width}x{height})")
    if overlap < 0:
        raise MagnetError(f"the overlap must be >= 0 pixels, got {overlap}")
    if window_size is None:
        win_w, win_h = window_size_for(height, width, max_pixels)
    else:
        win_w, win_h = (int(v) for v in window_size)
        if win_w < 1 or win_h < 1:
            raise MagnetError(f"the window must be at least 1x1 pixels, got {win_w}x{win_h}")
        if win_w * win_h > max_pixels:
            raise MagnetError(
                f"a {win_w}x{win_h} window is {win_w * win_h} pixels, over the server's limit of "
                f"{max_pixels}; pass a smaller window"
            )
        win_w, win_h = min(win_w, width), min(win_h, height)
    # Only the axes that are cut need room for the overlap.
    cut_sides = [side for side, length in ((win_w, width), (win_h, height)) if side < length]
    if cut_sides:
        overlap = min(overlap, min(cut_sides) // 4)
    rows = _starts(height, win_h, overlap)
    cols = _starts(width, win_w, overlap)
    row_keeps, col_keeps = _keeps(rows, win_h, height), _keeps(cols, win_w, width)
    windows = []
    for row, (keep_top, keep_bottom) in zip(rows, row_keeps):
        for col, (keep_left, keep_right) in zip(cols, col_keeps):
            windows.append(
                Window(
                    index=len(windows),
                    row=row,
                    col=col,
                    height=min(win_h, height - row),
                    width=min(win_w, width - col),
                    keep_row=keep_top,
                    keep_col=keep_left,
                    keep_height=keep_bottom - keep_top,
                    keep_width=keep_right - keep_left,
                )
            )
    return TilePlan(height, width, (win_w, win_h), overlap, tuple(windows))
