"""A figure of crops where thin structures come out differently: image, Downsample, MagNet, labels.

Crops are ranked by how many label pixels of thin classes (poles, signs, fence, bicycles, ...) the two
predictions disagree on, so the figure shows where MagNet's full-resolution patches can matter, whether
or not they helped. Pillow only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from magnet_triton.ops.geometry import Box

GAP = 4  # pixels between panels and rows
HEADER = 16  # pixels of column titles
COLUMNS = ("image", "Downsample", "MagNet", "labels")


@dataclass(frozen=True)
class Crop:
    """One chosen window: the scene, its box (x0, y0, x1, y1) in scene pixels, and its score (thin-class
    label pixels where the predictions differ)."""

    stem: str
    box: Box
    differing: int


def rank_windows(
    labels: np.ndarray, first: np.ndarray, second: np.ndarray, thin: Sequence[int], size: tuple[int, int]
) -> list[tuple[int, int, Box]]:
    """Every ``size`` (w, h) window on a half-window grid, as (differing, thin pixels, box), best first.

    ``differing`` counts label pixels of a ``thin`` class where ``first`` and ``second`` (H x W class
    maps) disagree; ties go to the window with more thin pixels. A window as large as the map is the map.
    """
    height, width = labels.shape
    cw, ch = min(size[0], width), min(size[1], height)
    is_thin = np.isin(labels, np.asarray(thin, dtype=labels.dtype))
    differ = is_thin & (first != second)

    def window_sums(mask: np.ndarray) -> np.ndarray:
        """The sum of ``mask`` over every window, len(ys) x len(xs), from a summed-area table."""
        table = np.zeros((height + 1, width + 1), dtype=np.int64)
        table[1:, 1:] = mask.cumsum(0).cumsum(1)
        y, x = np.asarray(ys)[:, None], np.asarray(xs)[None, :]
        return table[y + ch, x + cw] - table[y, x + cw] - table[y + ch, x] + table[y, x]

    xs = sorted(set(range(0, width - cw + 1, max(1, cw // 2))) | {width - cw})
    ys = sorted(set(range(0, height - ch + 1, max(1, ch // 2))) | {height - ch})
    d, t = window_sums(differ), window_sums(is_thin)
    ranked = [
        (int(d[i, j]), int(t[i, j]), (x, y, x + cw, y + ch))
        for i, y in enumerate(ys)
        for j, x in enumerate(xs)
    ]
    ranked.sort(key=lambda r: (-r[0], -r[1], r[2]))
    return ranked


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def choose_crops(
    scenes: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    thin: Sequence[int],
    size: tuple[int, int],
    count: int,
    per_scene: int = 2,
) -> list[Crop]:
    """The ``count`` best windows over ``scenes`` (stem, labels, Downsample map, MagNet map), at most
    ``per_scene`` from one scene and none overlapping another of the same scene."""
    candidates = []
    for stem, labels, coarse, fine in scenes:
        picked: list[Box] = []
        for differing, thin_pixels, box in rank_windows(labels, coarse, fine, thin, size):
            if len(picked) == per_scene:
                break
            if thin_pixels and not any(_overlaps(box, other) for other in picked):
                picked.append(box)
                candidates.append((differing, thin_pixels, Crop(stem, box, differing)))
    candidates.sort(key=lambda c: (-c[0], -c[1], c[2].stem, c[2].box))
    return [crop for _, _, crop in candidates[:count]]


def _full_palette(palette: np.ndarray) -> np.ndarray:
    """256 x 3 uint8: ``palette`` for its classes, black for the rest (255 = ignore among them)."""
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:256]
    return full


def render(
    panels: Sequence[Sequence[np.ndarray]], palette: np.ndarray, zoom: int, titles: Sequence[str] = COLUMNS
) -> np.ndarray:
    """Rows of panels (an H x W x 3 uint8 image, then H x W uint8 class maps) -> one RGB picture.

    Each panel is magnified ``zoom`` times (nearest: pixels stay visible), class maps coloured with
    ``palette``; titles above the columns, white around everything. Returns R x C x 3 uint8.
    """
    from PIL import Image, ImageDraw

    colours = _full_palette(palette)
    h, w = panels[0][0].shape[:2]
    ph, pw = h * zoom, w * zoom
    columns = len(panels[0])
    width = columns * pw + (columns + 1) * GAP
    height = HEADER + len(panels) * (ph + GAP) + GAP
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for r, row in enumerate(panels):
        top = HEADER + GAP + r * (ph + GAP)
        for c, panel in enumerate(row):
            rgb = panel if panel.ndim == 3 else colours[panel]
            left = GAP + c * (pw + GAP)
            canvas[top : top + ph, left : left + pw] = rgb.repeat(zoom, 0).repeat(zoom, 1)
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for c, title in enumerate(titles[:columns]):
        draw.text((GAP + c * (pw + GAP) + 2, 2), title, fill=(0, 0, 0))
    return np.asarray(picture)


def write_crop_figure(
    scenes: str | Path,
    predictions: str | Path,
    out: str | Path,
    *,
    palette: np.ndarray,
    thin: Sequence[int],
    count: int = 6,
    first: str = "downsample",
    second: str = "magnet",
) -> list[Crop]:
    """Choose crops from the scenes and the two modes' saved class maps and write the figure to ``out``.

    A crop is an eighth of the scene's width and height, magnified to at least 256 pixels wide.

    Returns:
        The crops shown, top to bottom (none when no scene has a thin-class pixel).
    """
    from PIL import Image

    from magnet_triton.imageio import read_class_map, read_image, save_atomically
    from magnet_triton.synthetic.command import scene_pairs

    pairs = scene_pairs(scenes)
    maps = []
    for stem, _, label_path in pairs:
        a = read_class_map(Path(predictions) / first / f"{stem}.png")
        b = read_class_map(Path(predictions) / second / f"{stem}.png")
        maps.append((stem, read_class_map(label_path), a, b))
    height, width = maps[0][1].shape
    size = (max(1, width // 8), max(1, height // 8))
    crops = choose_crops(maps, thin, size, count)
    if not crops:
        return []
    by_stem = {
        stem: (image_path, labels, a, b) for (stem, image_path, _), (_, labels, a, b) in zip(pairs, maps)
    }
    rows = []
    for crop in crops:
        image_path, labels, a, b = by_stem[crop.stem]
        x0, y0, x1, y1 = crop.box
        window = (slice(y0, y1), slice(x0, x1))
        rows.append([read_image(image_path)[window], a[window], b[window], labels[window]])
    zoom = max(1, math.ceil(256 / (crops[0].box[2] - crops[0].box[0])))
    save_atomically(Image.fromarray(render(rows, palette, zoom)), Path(out), "PNG")
    return crops
