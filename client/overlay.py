"""Colouring class maps and blending them over their images (numpy; Pillow only to read and write files)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from magnet_triton.client.palettes import as_palette
from magnet_triton.errors import MagnetError


def colorize(
    class_map: np.ndarray, palette: str | np.ndarray = "auto", *, num_classes: int | None = None
) -> np.ndarray:
    """H x W integer class map -> H x W x 3 uint8 colours.

    ``palette`` is a name (``auto``, ``cityscapes``, ``deepglobe``, ``generic``) or a C x 3 array;
    ``num_classes`` lets ``auto`` pick the dataset palette (19: Cityscapes, 7: DeepGlobe).

    Raises:
        MagnetError: the map is not H x W integers, or holds a class the palette has no colour for.
    """
    class_map = np.asarray(class_map)
    if class_map.ndim != 2 or not np.issubdtype(class_map.dtype, np.integer):
        raise MagnetError(f"a class map is H x W integers, got {class_map.dtype} {class_map.shape}")
    colours = as_palette(palette, num_classes)
    if class_map.size and (class_map.min() < 0 or class_map.max() >= len(colours)):
        raise MagnetError(
            f"the class map holds class {int(class_map.max())} but the palette has colours for 0..{len(colours) - 1}; "
            "use palette='generic' or a palette with more colours"
        )
    return colours[class_map]


def overlay(
    image: np.ndarray | str | os.PathLike,
    class_map: np.ndarray,
    palette: str | np.ndarray = "auto",
    alpha: float = 0.5,
    *,
    num_classes: int | None = None,
) -> np.ndarray:
    """Blend the colours of ``class_map`` over ``image``: ``(1 - alpha) * image + alpha * colour``.

    Args:
        image: H x W x 3 uint8 RGB array, or the path of an image file.
        class_map: H x W integer class map of the same size.
        palette: see :func:`colorize`.
        alpha: weight of the colours, 0 (image only) .. 1 (colours only).
        num_classes: see :func:`colorize`.

    Returns:
        H x W x 3 uint8.
    """
    if (
        not isinstance(alpha, (int, float))
        or isinstance(alpha, bool)
        or not (math.isfinite(alpha) and 0 <= alpha <= 1)
    ):
        raise MagnetError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if not isinstance(image, np.ndarray):
        from magnet_triton.imageio import read_image

        image = read_image(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise MagnetError(f"an image is H x W x 3 uint8 RGB, got {image.dtype} {image.shape}")
    colours = colorize(class_map, palette, num_classes=num_classes)
    if colours.shape != image.shape:
        raise MagnetError(
            f"the class map is {colours.shape[0]}x{colours.shape[1]} but the image is {image.shape[0]}x{image.shape[1]}"
        )
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def write_overlay(
    path: str | os.PathLike,
    image: np.ndarray | str | os.PathLike,
    class_map: np.ndarray,
    palette: str | np.ndarray = "auto",
    alpha: float = 0.5,
    *,
    num_classes: int | None = None,
) -> Path:
    """Write :func:`overlay` as an RGB image (PNG unless the suffix says otherwise); returns the path."""
    from PIL import Image

    from magnet_triton.imageio import save_atomically

    blended = overlay(image, class_map, palette, alpha, num_classes=num_classes)
    path = Path(path)
    extension = path.suffix.lower() or ".png"
    image_format = Image.registered_extensions().get(extension)
    if image_format is None:
        raise MagnetError(f"cannot write {path}: {extension!r} is not an image format Pillow writes")
    save_atomically(Image.fromarray(blended), path, image_format)  # H x W x 3 uint8 is RGB
    return path
