"""A canvas whose every drawing operation paints the image and the label map together.

A synthetic scene's labels are exact because no pixel of the image is ever written without the label
of the same pixel: each shape computes one boolean mask (inside its bounding box, so small shapes stay
cheap at 2048 x 1024) and paints colour and class through it. Later shapes cover earlier ones in both.
Colour-only touches (windows, lamps, lane paint) are the same shapes painted with the class they sit
on, so they never change a label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from magnet_triton.errors import MagnetError

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class Stroke:
    """One painted shape, as the scene's record of what it drew.

    Attributes:
        label: the train id painted (255 = ignore).
        box: (x0, y0, x1, y1) pixel bounds of the painted pixels, end-exclusive; every pixel the shape
            painted lies inside it.
        pixels: how many pixels the shape painted (before anything drawn later covered them).
    """

    label: int
    box: tuple[int, int, int, int]
    pixels: int


@dataclass
class Canvas:
    """An H x W float32 RGB image (0..255) and an H x W uint8 label map, drawn together.

    ``strokes`` records every shape that painted at least one pixel, in drawing order.
    """

    width: int
    height: int
    rng: np.random.Generator
    image: np.ndarray = field(init=False)
    labels: np.ndarray = field(init=False)
    strokes: list[Stroke] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise MagnetError(f"a canvas needs a positive size, got {self.width}x{self.height}")
        self.image = np.zeros((self.height, self.width, 3), dtype=np.float32)
        self.labels = np.full((self.height, self.width), 255, dtype=np.uint8)

    # ------------------------------------------------------------------ the one painting primitive
    def paint(
        self,
        box: tuple[float, float, float, float],
        mask_fn,
        colour: Colour,
        label: int,
        *,
        texture: float = 0.0,
        shade: float = 0.0,
    ) -> int:
        """Paint ``colour`` and ``label`` where ``mask_fn(xs, ys)`` is true inside ``box``.

        Args:
            box: (x0, y0, x1, y1) float bounds of the shape; clipped to the canvas.
            mask_fn: takes pixel-centre coordinates ``xs`` (1 x w) and ``ys`` (h x 1), float32, and
                returns an h x w bool mask.
            colour: RGB in 0..255.
            label: train id (0..254) or 255 for ignore.
            texture: standard deviation of per-pixel multiplicative noise (0.1 = 10 %), so regions are
                not flat colour: a network must learn shapes and context, not one RGB value per class.
            shade: darkening from the shape's top (none) to its bottom (``shade``), a cheap light fall-off.

        Returns:
            The number of pixels painted.
        """
        x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
        x1, y1 = min(self.width, int(np.ceil(box[2])) + 1), min(self.height, int(np.ceil(box[3])) + 1)
        if x1 <= x0 or y1 <= y0:
            return 0
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        mask = np.broadcast_to(mask_fn(xs, ys), (y1 - y0, x1 - x0))
        count = int(mask.sum())
        if count == 0:
            return 0
        rgb = np.broadcast_to(np.asarray(colour, dtype=np.float32), (y1 - y0, x1 - x0, 3)).copy()
        if shade:
            rgb *= 1.0 - shade * ((ys - y0) / max(1, y1 - y0))[..., None]
        if texture:
            rgb *= 1.0 + texture * self.rng.standard_normal((y1 - y0, x1 - x0, 1), dtype=np.float32)
        region = self.image[y0:y1, x0:x1]
        region[mask] = rgb[mask]
        self.labels[y0:y1, x0:x1][mask] = label
        rows, cols = np.nonzero(mask)
        self.strokes.append(
            Stroke(
                label,
                (
                    x0 + int(cols.min()),
                    y0 + int(rows.min()),
                    x0 + int(cols.max()) + 1,
                    y0 + int(rows.max()) + 1,
                ),
                count,
            )
        )
        return count

    # ------------------------------------------------------------------ shapes
    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Colour, label: int, **kw) -> int:
        """The pixels whose centres lie in [x0, x1) x [y0, y1); at least one pixel wide and tall, so a
        thin shape never vanishes at a small canvas size."""
        if x1 - x0 < 1:
            x0, x1 = (x0 + x1) / 2 - 0.5, (x0 + x1) / 2 + 0.5
        if y1 - y0 < 1:
            y0, y1 = (y0 + y1) / 2 - 0.5, (y0 + y1) / 2 + 0.5
        return self.paint(
            (x0, y0, x1, y1),
            lambda xs, ys: (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1),
            colour,
            label,
            **kw,
        )

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, colour: Colour, label: int, **kw) -> int:
        """A filled ellipse (radii at least half a pixel)."""
        rx, ry = max(rx, 0.5), max(ry, 0.5)
        return self.paint(
            (cx - rx, cy - ry, cx + rx, cy + ry),
            lambda xs, ys: ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0,
            colour,
            label,
            **kw,
        )

    def ring(self, cx: float, cy: float, r: float, width: float, colour: Colour, label: int, **kw) -> int:
        """A circle's outline ``width`` pixels wide (a wheel): thin at any size but never gapped."""
        half = max(width / 2, 0.71)  # 0.71 > sqrt(2)/2: a diagonal run of pixels stays 8-connected
        return self.paint(
            (cx - r - half, cy - r - half, cx + r + half, cy + r + half),
            lambda xs, ys: np.abs(np.hypot(xs - cx, ys - cy) - r) <= half,
            colour,
            label,
            **kw,
        )

    def line(
        self, p0: Sequence[float], p1: Sequence[float], width: float, colour: Colour, label: int, **kw
    ) -> int:
        """A segment from ``p0`` to ``p1`` (x, y), ``width`` pixels thick (at least one pixel's worth)."""
        (ax, ay), (bx, by) = p0, p1
        half = max(width / 2, 0.71)
        dx, dy = bx - ax, by - ay
        length2 = max(dx * dx + dy * dy, 1e-9)

        def mask(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
            t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / length2, 0.0, 1.0)
            return np.hypot(xs - (ax + t * dx), ys - (ay + t * dy)) <= half

        box = (min(ax, bx) - half, min(ay, by) - half, max(ax, bx) + half, max(ay, by) + half)
        return self.paint(box, mask, colour, label, **kw)

    def polygon(self, points: Sequence[Sequence[float]], colour: Colour, label: int, **kw) -> int:
        """A filled polygon (even-odd rule), vertices (x, y) in order."""
        pts = np.asarray(points, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[0] < 3 or pts.shape[1] != 2:
            raise MagnetError(f"a polygon needs at least three (x, y) vertices, got shape {pts.shape}")

        def mask(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
            inside = np.zeros(np.broadcast_shapes(xs.shape, ys.shape), dtype=bool)
            for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0)):
                if ay == by:
                    continue
                crosses = (ys >= min(ay, by)) & (ys < max(ay, by))
                x_at = ax + (ys - ay) * (bx - ax) / (by - ay)
                inside ^= crosses & (xs < x_at)
            return inside

        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        return self.paint((x0, y0, x1, y1), mask, colour, label, **kw)
