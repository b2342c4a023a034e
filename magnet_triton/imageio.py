"""Reading, decoding and writing images with clear errors (Pillow only, so the client can use it too).

The server's decode step and ``segment-local`` use the same decoder, so both see the same pixels.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from magnet_triton.errors import ImageTooLarge, MagnetError

#: What the bundle decodes, by Pillow's format name. Other formats are refused with this list, not
#: guessed at. (The multi-picture JPEGs of phone cameras open as JPEG; their first picture is read.)
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF")
#: Pillow modes of 8-bit images; deeper ones (16-bit, 32-bit integer or float samples) would be narrowed
#: to 8 bits by the RGB conversion, silently, so they are refused instead.
_EIGHT_BIT_MODES = (
    "1",
    "L",
    "LA",
    "La",
    "P",
    "PA",
    "RGB",
    "RGBA",
    "RGBa",
    "RGBX",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
)
#: The largest image decoded when the caller gives no limit (``segment-local``, the client's ``--raw``);
#: the server's decode step uses its config's ``max_image_pixels`` instead.
MAX_DECODE_PIXELS = 64_000_000


def align_pillow_guard(max_pixels: int) -> None:
    """Raise Pillow's process-wide decompression-bomb guard to ``max_pixels`` where it is lower.

    Pillow refuses on open past twice ``Image.MAX_IMAGE_PIXELS`` (about 179 MP by default), whatever
    limit :func:`decode_image` is given; a process that decodes for one configured limit (the server's
    decode step) calls this once so that the configured limit is the one that holds. Our own guard
    still refuses on the declared size, before decoding.
    """
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)


def decode_image(
    data: bytes, *, source: str = "the image", max_pixels: int = MAX_DECODE_PIXELS
) -> np.ndarray:
    """Encoded image bytes -> H x W x 3 uint8 RGB, or a :class:`MagnetError` that says what is wrong.

    Accepted: :data:`ACCEPTED_FORMATS`, 8-bit samples (grey, palette and alpha images are converted to
    RGB; alpha is dropped). The declared size is checked against ``max_pixels`` before any pixel is
    decoded, so a small file that declares a huge image costs nothing. EXIF orientation is applied: a
    phone photo stored sideways is segmented the way it is shown.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise MagnetError(f"{source} is empty (0 bytes)")
    try:
        # Pillow's own bomb guard raises on open for ~180 MP and more; ours, below, is the real limit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        with img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"{source} declares {width}x{height} = {width * height} pixels, over the limit of "
                    f"{max_pixels}; send a smaller image"
                )
            if img.mode not in _EIGHT_BIT_MODES:
                raise MagnetError(
                    f"{source} is a {img.format} image with {img.mode!r} samples (more than 8 bits): "
                    f"convert it to 8-bit RGB first, choosing how to scale it; {_RASTER_ADVICE}"
                )
            # Pillow opens 16-bit RGB TIFFs and PNGs as 8-bit "RGB" and keeps the high byte of each
            # sample: the mode alone does not show it, the file's declared depth does.
            deep = _declared_bits(img)
            if deep > 8:
                raise MagnetError(
                    f"{source} is a {img.format} image with {deep}-bit samples, which would be cut to "
                    f"8 bits: scale it to 8 bits first; {_RASTER_ADVICE}"
                )
            _check_tiff_bands(img, source)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                rgb = ImageOps.exif_transpose(img).convert("RGB")
                rgb.load()
    except MagnetError:
        raise
    except Image.DecompressionBombError as e:
        # Pillow refuses on open past twice its MAX_IMAGE_PIXELS, before we see the size: say it our way.
        found = re.search(r"\((\d+) pixels\)", str(e))
        declared = f"{int(found.group(1))} pixels" if found else "more pixels than Pillow opens"
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        raise ImageTooLarge(
            f"{source} declares {declared}, over the limit of {limit}; send a smaller image"
        ) from None
    except UnidentifiedImageError:
        raise MagnetError(
            f"{source} is not a readable image: not one of the accepted formats ({', '.join(ACCEPTED_FORMATS)})"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise MagnetError(f"{source} is not a readable image: damaged or truncated ({e})") from e
    array = np.asarray(rgb, dtype=np.uint8)
    if array.size == 0:
        raise MagnetError(f"{source} has no pixels")
    return array


#: What a user with a deep or multiband image can do instead (the client reads it with rasterio).
_RASTER_ADVICE = (
    "magnet-client reads such files itself with the raster extra (pip install 'magnet-triton[raster]'), "
    "choosing bands with --bands and the 8-bit scaling with --scale"
)
#: TIFF tags (numbers from the TIFF 6.0 specification).
_BITS_PER_SAMPLE, _PHOTOMETRIC, _SAMPLES_PER_PIXEL, _EXTRA_SAMPLES = 258, 262, 277, 338
#: Colour channels of each TIFF photometric interpretation Pillow decodes (0/1 grey, 2 RGB, 3 palette,
#: 5 CMYK, 6 YCbCr, 8 CIELab).
_TIFF_COLOUR_CHANNELS = {0: 1, 1: 1, 2: 3, 3: 1, 5: 4, 6: 3, 8: 3}
#: ExtraSamples values that mean alpha (associated, unassociated); 0 is an unspecified data band.
_TIFF_ALPHA = (1, 2)


def _declared_bits(img: Any) -> int:
    """The deepest sample the file declares (TIFF BitsPerSample; a PNG's 16-bit raw mode), in bits;
    8 for the formats that hold no deeper samples Pillow would open as 8-bit."""
    if img.format == "TIFF":
        bits = img.tag_v2.get(_BITS_PER_SAMPLE, 8)
        return max(bits) if isinstance(bits, tuple) else int(bits)
    if img.format != "PNG":  # elsewhere a ";16" raw mode is a packed pixel (BMP's "BGR;16"), not a sample
        return 8
    for tile in img.tile:
        args = tile[3] if len(tile) > 3 else None
        rawmode = args[0] if isinstance(args, tuple) and args else args
        found = re.search(r";(16|32)", rawmode) if isinstance(rawmode, str) else None
        if found:
            return int(found.group(1))
    return 8


def _check_tiff_bands(img: Any, source: str) -> None:
    """Refuse a TIFF whose bands beyond its colour channels are data rather than alpha: converting to
    RGB would drop them without a word."""
    if img.format != "TIFF":
        return
    samples = int(img.tag_v2.get(_SAMPLES_PER_PIXEL, 1))
    colour = _TIFF_COLOUR_CHANNELS.get(int(img.tag_v2.get(_PHOTOMETRIC, 1)), samples)
    extra = img.tag_v2.get(_EXTRA_SAMPLES, ())
    extra = extra if isinstance(extra, tuple) else (extra,)
    alpha = sum(1 for e in extra if int(e) in _TIFF_ALPHA)
    if samples > colour + alpha:
        raise MagnetError(
            f"{source} is a TIFF with {samples} bands, {samples - colour - alpha} of them neither colour "
            f"nor alpha, which would be dropped: choose three bands; {_RASTER_ADVICE}"
        )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> H x W x 3 uint8 RGB."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MagnetError(f"cannot read image {path}: {e.strerror or e}") from e
    return decode_image(data, source=str(path))


def save_atomically(image: Any, path: Path, image_format: str) -> None:
    """Save a PIL image to ``path`` through a temporary file beside it: a reader (or a run resumed after
    a crash) sees the whole file or none, never a truncated one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
            partial = Path(tmp.name)
            image.save(tmp, format=image_format)
        os.replace(partial, path)
    except OSError as e:
        if "partial" in locals():
            partial.unlink(missing_ok=True)
        raise MagnetError(f"cannot write {path}: {e.strerror or e}") from e


def write_class_map(
    path: str | os.PathLike, class_map: np.ndarray, palette: np.ndarray | None = None
) -> None:
    """Write an H x W uint8 class map as a PNG of class indices, written atomically.

    With ``palette`` (C x 3 uint8, row c the colour of class c) the PNG is a palette ("P") image: it opens
    in colour, and its pixels still read back as the class indices (``np.asarray(Image.open(path))``,
    :func:`read_class_map`). Without, a grey ("L") image of the indices.
    """
    from PIL import Image

    if class_map.dtype != np.uint8 or class_map.ndim != 2:
        raise ValueError(f"a class map is H x W uint8, got {class_map.dtype} {class_map.shape}")
    if palette is None:
        image = Image.fromarray(class_map, mode="L")
    else:
        palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        if class_map.size and int(class_map.max()) >= len(palette):
            raise ValueError(f"class {int(class_map.max())} has no colour in a palette of {len(palette)}")
        image = Image.fromarray(class_map, mode="P")
        image.putpalette(palette[:256].reshape(-1).tolist())
    save_atomically(image, Path(path), "PNG")


def write_confidence(path: str | os.PathLike, confidence: np.ndarray) -> None:
    """Write an H x W float32 map (the confidence, in [0, 1]) as a 32-bit float TIFF, atomically: it
    reads back exactly (``np.asarray(Image.open(path))``)."""
    from PIL import Image

    if confidence.dtype != np.float32 or confidence.ndim != 2:
        raise ValueError(f"a confidence map is H x W float32, got {confidence.dtype} {confidence.shape}")
    save_atomically(Image.fromarray(confidence, mode="F"), Path(path), "TIFF")


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
