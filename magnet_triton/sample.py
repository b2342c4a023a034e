"""Synthetic inputs made here, so they have no licence questions: a street scene to try the bundle on
(drawn by :mod:`magnet_triton.synthetic`, which also gives its labels), and the decompression-bomb shape
of PNG that the decoders must refuse before decoding."""

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
    """H x W x 3 uint8 RGB street scene: the image half of :func:`magnet_triton.synthetic.scene`, whose
    labels are exact (2:1, like the Cityscapes scenes the default preset expects)."""
    from magnet_triton.synthetic import scene

    return scene(width, height, seed)[0]
