"""Turning what a user passes to ``segment`` into the tensors of one request (pure logic, no gRPC).

Everything a user can get wrong is caught here, before anything is sent, as a
:class:`BadRequestError` that says what to pass instead. Names and dtypes come from
:mod:`magnet_triton.io_spec`; the overrides are checked by the same function the server uses.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from magnet_triton import io_spec
from magnet_triton.client.errors import BadRequestError
from magnet_triton.errors import MagnetError
from magnet_triton.request_options import option_names, parse_overrides, request_option

#: What ``segment`` accepts: a file path, the encoded bytes of a PNG/JPEG/..., or an H x W x 3 uint8 array.
ImageInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray


class Transport(enum.Enum):
    """How the image reaches the server."""

    GRPC = "grpc"  # inside the gRPC message
    SYSTEM_SHM = "system shared memory"  # a POSIX region on this machine; the server must run here too
    CUDA_SHM = "CUDA shared memory"  # a cudaIpc region on a GPU of this machine


@dataclass(frozen=True)
class Tensor:
    """One input tensor: its name, data and Triton dtype name ("UINT8", "BYTES", ...)."""

    name: str
    array: np.ndarray
    datatype: str


@dataclass(frozen=True)
class Request:
    """Everything needed to send one segmentation request.

    Attributes:
        model_name: ``magnet`` (encoded bytes, decoded by the server) or ``magnet_pipeline`` (raw pixels).
        image: the IMAGE_BYTES (BYTES [1]) or IMAGE (UINT8 H x W x 3) tensor.
        overrides: the optional per-request option tensors (``MODE``, ``N_POINTS``, ...) that were given.
        transport: how ``image`` travels; shared memory only ever carries a raw IMAGE.
        source: a short description of the image for messages ("photo.png", "a 150x230 array").
        outputs: the outputs to ask for (see :func:`check_outputs`); None: every one.
    """

    model_name: str
    image: Tensor
    overrides: tuple[Tensor, ...]
    transport: Transport
    source: str
    outputs: tuple[str, ...] | None = None

    @property
    def tensors(self) -> tuple[Tensor, ...]:
        return (self.image, *self.overrides)


#: What ``outputs=`` may name beside the class map, by the short names the CLI's ``--save`` takes too.
OPTIONAL_OUTPUTS = {"coarse": io_spec.COARSE_SEGMENTATION, "confidence": io_spec.CONFIDENCE}


def check_outputs(outputs: Any) -> tuple[str, ...] | None:
    """The outputs a request asks for: the class map, ``SCALES_DONE`` (a count), and those named.

    ``outputs``: None (every output), or names among ``segmentation``, ``coarse``, ``confidence`` (or
    their tensor names). Asking for less skips the server's full-resolution passes for the rest.

    Raises:
        BadRequestError: an unknown name.
    """
    if outputs is None:
        return None
    if isinstance(outputs, str):
        outputs = [outputs]
    chosen = [io_spec.SEGMENTATION]
    known = {"segmentation": io_spec.SEGMENTATION, **OPTIONAL_OUTPUTS}
    for name in outputs:
        tensor = known.get(str(name).lower(), str(name) if str(name) in known.values() else None)
        if tensor is None:
            raise BadRequestError(f"unknown output {name!r}; choose among {sorted(known)}")
        if tensor not in chosen:
            chosen.append(tensor)
    return (*chosen, io_spec.SCALES_DONE)


def prepare(
    image: ImageInput,
    overrides: tuple[Tensor, ...],
    transport: Transport,
    outputs: tuple[str, ...] | None = None,
    names: io_spec.ModelNames = io_spec.DEFAULT_NAMES,
) -> Request:
    """Validate ``image`` and build the request with the (already checked) ``overrides``.

    Files and bytes go to the ensemble as encoded bytes (smaller on the wire, decoded by the server),
    unless shared memory is asked for: then they are decoded here, since a region carries raw pixels.

    Raises:
        BadRequestError: the image is unusable; the message says what to pass.
    """
    if isinstance(image, np.ndarray):
        pixels, source = check_array(image), f"a {image.shape[0]}x{image.shape[1]} array"
    else:
        data, source = _encoded(image)
        if transport is Transport.GRPC:
            tensor = Tensor(io_spec.IMAGE_BYTES, np.array([data], dtype=np.object_), "BYTES")
            return Request(names.ensemble, tensor, overrides, transport, source, outputs)
        pixels = _decode(data, source)
    tensor = Tensor(io_spec.IMAGE, pixels, "UINT8")
    return Request(names.pipeline, tensor, overrides, transport, source, outputs)


def prepare_progressive(
    image: ImageInput, overrides: tuple[Tensor, ...], names: io_spec.ModelNames = io_spec.DEFAULT_NAMES
) -> Request:
    """The request of a progressive stream: always pixels (files and bytes decoded here), since the
    decoupled ``magnet_pipeline_progressive`` has no decode step in front of it."""
    if isinstance(image, np.ndarray):
        pixels, source = check_array(image), f"a {image.shape[0]}x{image.shape[1]} array"
    else:
        data, source = _encoded(image)
        pixels = _decode(data, source)
    tensor = Tensor(io_spec.IMAGE, pixels, "UINT8")
    outputs = (io_spec.SEGMENTATION, io_spec.SCALES_DONE)
    return Request(names.progressive, tensor, overrides, Transport.GRPC, source, outputs)


def check_array(image: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 RGB array, C-contiguous (copied only if it was not), or a BadRequestError."""
    shape, dtype = tuple(image.shape), image.dtype
    if dtype != np.uint8:
        hint = (
            "scale [0, 1] floats with (image * 255).round().clip(0, 255).astype(np.uint8)"
            if dtype.kind == "f"
            else "convert it with image.astype(np.uint8) if its values are 0..255"
        )
        raise BadRequestError(f"an image array must be uint8 H x W x 3 RGB, got {dtype} {shape}; {hint}")
    if image.ndim == 2:
        raise BadRequestError(
            f"an image array must be H x W x 3 RGB, got a grey H x W array {shape}; "
            "repeat it with np.repeat(image[:, :, None], 3, axis=2)"
        )
    if image.ndim != 3 or shape[2] not in (3, 4):
        raise BadRequestError(f"an image array must be H x W x 3 RGB, got shape {shape}")
    if shape[2] == 4:
        raise BadRequestError(
            f"an image array must be H x W x 3 RGB, got RGBA {shape}; drop alpha with image[..., :3]"
        )
    if shape[0] == 0 or shape[1] == 0:
        raise BadRequestError(f"the image array has no pixels (shape {shape})")
    return np.ascontiguousarray(image)


def _encoded(image: Any) -> tuple[bytes, str]:
    """The encoded bytes of a path or bytes-like ``image``, and a description for messages."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise BadRequestError("the image bytes are empty; pass the contents of a PNG or JPEG file")
        return data, f"{len(data)} bytes of image data"
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BadRequestError(f"no such image file: {path}; check the path") from None
        except IsADirectoryError:
            raise BadRequestError(f"{path} is a folder; pass the image files in it") from None
        except OSError as e:
            raise BadRequestError(f"cannot read image {path}: {e.strerror or e}") from e
        if not data:
            raise BadRequestError(f"image file {path} is empty (0 bytes)")
        return data, str(path)
    raise BadRequestError(
        f"cannot send a {type(image).__name__} as an image; pass a file path, the encoded bytes of a PNG/JPEG, "
        "or a uint8 H x W x 3 numpy array (np.asarray(pil_image.convert('RGB')) for a PIL image)"
    )


def _decode(data: bytes, source: str) -> np.ndarray:
    from magnet_triton.imageio import decode_image  # Pillow, only on this path

    try:
        return decode_image(data, source=source)
    except MagnetError as e:
        raise BadRequestError(str(e)) from e


def override_tensors(overrides: Mapping[str, Any]) -> tuple[Tensor, ...]:
    """The optional input tensors of the per-request options that are not None (keyed by option name)."""
    unknown = sorted(set(overrides) - set(option_names()))
    if unknown:
        raise BadRequestError(f"unknown override(s) {unknown}; known: {sorted(option_names())}")
    try:
        # The server's own parser, so client and server accept exactly the same values.
        parsed = parse_overrides({k: v for k, v in overrides.items() if v is not None})
    except MagnetError as e:
        raise BadRequestError(str(e)) from e
    tensors = []
    for name, value in parsed.items():
        option = request_option(name)
        tensors.append(Tensor(option.tensor, option.encode(value), option.dtype))
    return tuple(tensors)
