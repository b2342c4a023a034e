"""Reading, decoding and writing images with clear errors (Pillow only, so the client can use it too).

The server's decode step and ``segment-local`` use the same decoder, so both see the same pixels.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from magnet_triton.errors import MagnetError

#: Refuse images past this many pixels before decoding them (Pillow's own guard is a warning only).
MAX_DECODE_PIXELS = 64_000_000


def decode_image(data: bytes, *, source: str = "the image") -> np.ndarray:
    """Encoded PNG/JPEG/... bytes -> H x W x 3 uint8 RGB. Grey, palette and alpha images are converted."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise MagnetError(f"{source} is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > MAX_DECODE_PIXELS:
                raise MagnetError(
                    f"{source} is {width}x{height}, more than the {MAX_DECODE_PIXELS} pixels this bundle decodes"
                )
            rgb = img.convert("RGB")
            rgb.load()
    except MagnetError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise MagnetError(f"{source} is not a readable image (PNG, JPEG, ...): {e}") from e
    array = np.asarray(rgb, dtype=np.uint8)
    if array.size == 0:
        raise MagnetError(f"{source} has no pixels")
    return array


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> H x W x 3 uint8 RGB."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MagnetError(f"cannot read image {path}: {e.strerror or e}") from e
    return decode_image(data, source=str(path))


def write_class_map(path: str | os.PathLike, class_map: np.ndarray) -> None:
    """Write an H x W uint8 class map as a single-channel PNG of class indices."""
    from PIL import Image

    path = Path(path)
    if class_map.dtype != np.uint8 or class_map.ndim != 2:
        raise ValueError(f"a class map is H x W uint8, got {class_map.dtype} {class_map.shape}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(class_map, mode="L").save(path, format="PNG")
    except OSError as e:
        raise MagnetError(f"cannot write {path}: {e.strerror or e}") from e


#: PIL modes that hold one value per pixel; palette ("P") indices are the class ids.
_SINGLE_CHANNEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")


def read_class_map(path: str | os.PathLike) -> np.ndarray:
    """A single-channel PNG of class indices -> H x W integers (uint8, or uint16 / int32 for labels
    saved with more than 8 bits)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode not in _SINGLE_CHANNEL_MODES:
                raise MagnetError(
                    f"{path} is not a single-channel class map (PIL mode {img.mode}); save class "
                    "indices as an 8-bit grey or palette PNG, not a colour rendering"
                )
            return np.asarray(img)
    except FileNotFoundError as e:
        raise MagnetError(f"{path} does not exist") from e
    except (UnidentifiedImageError, OSError) as e:
        raise MagnetError(f"cannot read {path} as an image: {e}") from e
