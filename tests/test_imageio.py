"""The one decoder of the bundle (server decode step, ``segment-local``, the client's ``--raw``): what it
accepts, and a clear refusal, before any pixel is decoded where it can be, for everything else."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from magnet_triton.errors import MagnetError
from magnet_triton.imageio import ACCEPTED_FORMATS, decode_image
from magnet_triton.sample import png_declaring


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


PIXELS = np.random.default_rng(0).integers(0, 256, size=(24, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_decode_to_the_same_pixels(fmt):
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    np.testing.assert_array_equal(decode_image(_encode(Image.fromarray(PIXELS), fmt, **kwargs)), PIXELS)


def test_jpeg_decodes_close_to_the_pixels():
    decoded = decode_image(_encode(Image.fromarray(PIXELS), "JPEG", quality=100))
    assert decoded.shape == PIXELS.shape and decoded.dtype == np.uint8


def test_a_format_outside_the_list_is_refused_naming_the_list():
    gif = _encode(Image.fromarray(PIXELS).convert("P"), "GIF")
    with pytest.raises(MagnetError, match=r"not one of the accepted formats \(PNG, JPEG, BMP, WEBP, TIFF\)"):
        decode_image(gif, source="upload.gif")
    assert "GIF" not in ACCEPTED_FORMATS


def test_a_declared_size_over_the_limit_is_refused_before_decoding():
    bomb = png_declaring(30000, 30000)
    assert len(bomb) < 200
    with pytest.raises(MagnetError, match=r"declares 900000000 pixels, over the limit of 64000000"):
        decode_image(bomb)
    with pytest.raises(
        MagnetError, match=r"declares 8000x8000 = 64000000 pixels, over the limit of 16777216"
    ):
        decode_image(png_declaring(8000, 8000), max_pixels=16 * 1024 * 1024)


def test_a_pillow_bomb_error_becomes_a_clear_refusal():
    # Past ~180 MP Pillow refuses on open; with a limit above that, its error must still come out as ours.
    with pytest.raises(MagnetError, match=r"declares 400000000 pixels, over the limit of 178956970"):
        decode_image(png_declaring(20000, 20000), max_pixels=10**12)


def test_sixteen_bit_samples_are_refused_not_narrowed():
    deep = Image.fromarray(np.full((8, 8), 1337, dtype=np.uint16))
    with pytest.raises(
        MagnetError, match=r"'I;16' samples \(more than 8 bits\): convert it to 8-bit RGB first"
    ):
        decode_image(_encode(deep, "PNG"))


def test_exif_orientation_is_applied():
    tall = np.zeros((30, 10, 3), dtype=np.uint8)
    tall[:5] = 255  # a white band at the top
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(Image.fromarray(tall), "JPEG", quality=100, exif=exif.tobytes())
    shown = decode_image(data)
    assert shown.shape == (10, 30, 3)  # displayed sideways, as a viewer shows it
    assert shown[:, -5:].mean() > 200 and shown[:, :5].mean() < 50  # the band is now on the right


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "is empty"),
        (b"not an image at all", "not one of the accepted formats"),
        (None, "damaged or truncated"),
    ],
    ids=["empty", "garbage", "truncated"],
)
def test_bad_bytes_are_refused_saying_why(data, words):
    if data is None:
        data = _encode(Image.fromarray(PIXELS), "PNG")[:-30]
    with pytest.raises(MagnetError, match=words):
        decode_image(data, source="x.png")
