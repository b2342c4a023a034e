"""Synthetic inputs made here, so they have no licence questions: a street scene to try the bundle on,
and the decompression-bomb shape of PNG that the decoders must refuse before decoding."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` RGB, with almost no pixel data behind it (a
    few hundred bytes: what a decompression bomb looks like before it is decoded)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def street_scene(width: int = 1024, height: int = 512, seed: int = 0) -> np.ndarray:
    """H x W x 3 uint8 RGB drawing of a street: sky, buildings with windows, trees, road, lanes, cars.

    Crude on purpose; what matters is large regions with clear boundaries and some texture, like the
    Cityscapes scenes the default preset expects (2:1 aspect ratio). Its pixels are fixed: golden files,
    INT8 calibration and recorded benchmarks depend on them. Scenes with exact labels, for training and
    evaluation, are :mod:`magnet_triton.synthetic`'s.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 3), dtype=np.float32)
    horizon = int(height * 0.55)

    sky = np.array([110, 160, 225], np.float32) + (y[..., None] / height) * np.array([60, 50, 20], np.float32)
    image[:] = sky
    # Buildings: a row of blocks of random height and colour, with a grid of windows.
    left = 0
    while left < width:
        w = int(rng.integers(width // 12, width // 5))
        top = int(rng.integers(height // 10, horizon - height // 10))
        colour = rng.integers(90, 200, size=3).astype(np.float32)
        image[top:horizon, left : left + w] = colour
        for wy in range(top + 8, horizon - 12, 22):
            for wx in range(left + 6, left + w - 10, 18):
                image[wy : wy + 10, wx : wx + 8] = colour * 0.45
        left += w
    # Trees: green discs along the pavement.
    for cx in range(int(width * 0.05), width, int(width * 0.18)):
        cy, r = horizon - height // 12, height // 10
        disc = (x - cx) ** 2 + (y - cy) ** 2 < r**2
        image[disc] = np.array([50, 120, 45], np.float32) + rng.normal(0, 12, size=(int(disc.sum()), 3))
        image[cy : horizon + 4, cx - 3 : cx + 3] = [90, 60, 35]
    # Pavement, then the road widening towards the camera.
    image[horizon : horizon + height // 20] = [170, 165, 160]
    road_top = horizon + height // 20
    image[road_top:] = [85, 85, 90]
    # Lane markings converging to a vanishing point.
    for lane in (-0.25, 0.25):
        t = (y - road_top) / max(1, height - road_top)
        lane_x = width / 2 + lane * width * t * 1.6
        stripe = (y >= road_top) & (np.abs(x - lane_x) < 2 + 6 * t) & (((y - road_top) // 18) % 2 == 0)
        image[stripe] = [235, 235, 225]
    # Cars: boxes on the road.
    for _ in range(4):
        cw, ch = int(rng.integers(width // 14, width // 8)), int(rng.integers(height // 16, height // 9))
        cx, cy = int(rng.integers(0, width - cw)), int(rng.integers(road_top, height - ch))
        image[cy : cy + ch, cx : cx + cw] = rng.integers(20, 230, size=3)
        image[cy + ch - 6 : cy + ch, cx + 4 : cx + cw - 4] = [20, 20, 20]
    image += rng.normal(0, 4, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
