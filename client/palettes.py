"""Colour palettes for class maps: Cityscapes, DeepGlobe and a generic one for any class count.

A palette is a read-only C x 3 uint8 array: row ``c`` is the RGB colour of class ``c``.
"""

from __future__ import annotations

import numpy as np

from magnet_triton.errors import MagnetError

#: Cityscapes' 19 train ids, in order, with the official colours (cityscapesScripts ``labels.py``).
CITYSCAPES_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("road", (128, 64, 128)),
    ("sidewalk", (244, 35, 232)),
    ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)),
    ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)),
    ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)),
    ("bus", (0, 60, 100)),
    ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)),
)

#: DeepGlobe land cover's 7 classes, in the order MagNet's DeepGlobe models predict them.
DEEPGLOBE_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("urban", (0, 255, 255)),
    ("agriculture", (255, 255, 0)),
    ("rangeland", (255, 0, 255)),
    ("forest", (0, 255, 0)),
    ("water", (0, 0, 255)),
    ("barren", (255, 255, 255)),
    ("unknown", (0, 0, 0)),
)

#: Names :func:`get_palette` takes.
PALETTE_NAMES = ("auto", "cityscapes", "deepglobe", "generic")


def _frozen(colours: list[tuple[int, int, int]] | np.ndarray) -> np.ndarray:
    array = np.array(colours, dtype=np.uint8).reshape(-1, 3)
    array.setflags(write=False)
    return array


CITYSCAPES = _frozen([colour for _, colour in CITYSCAPES_CLASSES])
DEEPGLOBE = _frozen([colour for _, colour in DEEPGLOBE_CLASSES])


def generic_palette(num_classes: int = 256) -> np.ndarray:
    """``num_classes`` x 3 uint8: the PASCAL VOC colour map (class 0 black, then well-separated colours).

    Each class index's bits are spread over the high bits of R, G and B, so neighbouring indices get
    clearly different colours; it is the usual default of segmentation tools.
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or not 1 <= num_classes <= 256
    ):
        raise MagnetError(f"a generic palette has 1..256 classes (class maps are uint8), got {num_classes!r}")
    index = np.arange(num_classes, dtype=np.int64)
    colours = np.zeros((num_classes, 3), dtype=np.int64)
    for shift in range(7, -1, -1):
        for channel in range(3):
            colours[:, channel] |= ((index >> channel) & 1) << shift
        index >>= 3
    return _frozen(colours)


def get_palette(name: str = "auto", num_classes: int | None = None) -> np.ndarray:
    """The palette called ``name``.

    ``auto`` picks by ``num_classes``: 19 -> Cityscapes, 7 -> DeepGlobe, anything else (or None: 256)
    -> generic. ``generic`` is sized ``num_classes`` (256 when None).
    """
    if name == "cityscapes":
        return CITYSCAPES
    if name == "deepglobe":
        return DEEPGLOBE
    if name == "auto":
        if num_classes == len(CITYSCAPES):
            return CITYSCAPES
        if num_classes == len(DEEPGLOBE):
            return DEEPGLOBE
        return generic_palette(256 if num_classes is None else num_classes)
    if name == "generic":
        return generic_palette(256 if num_classes is None else num_classes)
    raise MagnetError(f"unknown palette {name!r}; choose one of {list(PALETTE_NAMES)}")


def as_palette(palette: str | np.ndarray | list, num_classes: int | None = None) -> np.ndarray:
    """A C x 3 uint8 palette from a name (see :func:`get_palette`) or a C x 3 array-like of 0..255."""
    if isinstance(palette, str):
        return get_palette(palette, num_classes)
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] == 0:
        raise MagnetError(f"a palette is a C x 3 array of RGB colours, got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or array.min() < 0 or array.max() > 255:
            raise MagnetError("palette colours must be numbers in 0..255")
        array = array.astype(np.uint8)
    return array
