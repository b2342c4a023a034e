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


def _sixteen_bit_rgb_tiff() -> tuple[bytes, np.ndarray]:
    """A 16-bit RGB TIFF (values up to 1337), written with rasterio as a GIS would write one."""
    pytest.importorskip("rasterio", reason="rasterio writes the 16-bit RGB TIFF")
    from rasterio.io import MemoryFile

    values = np.random.default_rng(2).integers(0, 1338, size=(3, 12, 16), dtype=np.uint16)
    values[0, 0, 0] = 1337
    with MemoryFile() as memory:
        with memory.open(
            driver="GTiff", height=12, width=16, count=3, dtype="uint16", photometric="RGB"
        ) as ds:
            ds.write(values)
        return memory.read(), values


def test_a_sixteen_bit_rgb_tiff_is_refused_not_cut_to_its_high_byte():
    from PIL import Image

    data, _ = _sixteen_bit_rgb_tiff()
    # What the decoder used to hand on: Pillow's RGB conversion keeps each sample's high byte.
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "RGB" and np.asarray(img.convert("RGB")).max() == 1337 >> 8
    with pytest.raises(
        MagnetError, match=r"TIFF image with 16-bit samples, which would be cut to 8 bits.*--scale"
    ):
        decode_image(data, source="deep.tif")


def test_a_sixteen_bit_rgb_png_is_refused_too():
    import zlib

    from PIL import Image

    deep = np.random.default_rng(4).integers(0, 65536, size=(8, 8, 3), dtype=np.uint16)
    # Pillow writes no 16-bit RGB PNG: the chunks are built here from the big-endian samples.
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in deep)
    png = _png(8, 8, bit_depth=16, colour_type=2, idat=zlib.compress(raw))
    with Image.open(io.BytesIO(png)) as img:
        assert img.mode == "RGB"  # Pillow presents it as 8-bit: only the declared depth says otherwise
    with pytest.raises(MagnetError, match=r"PNG image with 16-bit samples"):
        decode_image(png, source="deep.png")


def _png(width: int, height: int, *, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_four_band_tiff_is_refused_not_cut_to_three():
    pytest.importorskip("rasterio", reason="rasterio writes the 4-band TIFF")
    from rasterio.io import MemoryFile

    values = np.random.default_rng(5).integers(0, 256, size=(4, 10, 10), dtype=np.uint8)
    with MemoryFile() as memory:
        with memory.open(
            driver="GTiff", height=10, width=10, count=4, dtype="uint8", photometric="RGB"
        ) as ds:
            ds.write(values)
        data = memory.read()
    with pytest.raises(MagnetError, match=r"TIFF with 4 bands, 1 of them neither colour nor alpha.*--bands"):
        decode_image(data, source="four.tif")


def test_an_rgba_tiff_keeps_its_colour_and_drops_alpha_as_a_png_does():
    rgba = np.random.default_rng(6).integers(0, 256, size=(10, 12, 4), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(_encode(Image.fromarray(rgba, "RGBA"), "TIFF")), rgba[..., :3])


def test_a_configured_limit_over_pillows_guard_holds_once_the_guard_is_aligned(monkeypatch):
    from magnet_triton.imageio import align_pillow_guard

    # The decode step's process aligns Pillow's process-wide guard with its config; here, undone after.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    align_pillow_guard(300_000_000)
    with pytest.raises(
        MagnetError, match=r"declares 20000x20000 = 400000000 pixels, over the limit of 300000000"
    ):
        decode_image(png_declaring(20000, 20000), max_pixels=300_000_000)
