"""Python client of a MagNet model repository served by Triton: the library behind ``magnet-client``.

    from magnet_triton.client import MagnetClient

    with MagnetClient("127.0.0.1:8001") as client:
        result = client.segment("photo.jpg")          # or encoded bytes, or an H x W x 3 uint8 array
        result.segmentation                           # H x W uint8 class map
        client.segment_raster("scene.tif", "maps/", bands=(4, 3, 2))  # any size, GeoTIFF out

Needs only numpy, Pillow and ``tritonclient[grpc]`` (the ``client`` extra), never torch or TensorRT;
``tritonclient`` is imported on first use, so this package imports without it.
"""

from magnet_triton.client.aio import AsyncMagnetClient
from magnet_triton.client.core import MagnetClient
from magnet_triton.client.errors import (
    BadRequestError,
    ConnectionFailedError,
    DependencyMissingError,
    MagnetClientError,
    ModelRecoveringError,
    RequestTimeoutError,
    ServerBusyError,
    ServerError,
    SharedMemoryError,
)
from magnet_triton.client.overlay import colorize, overlay, write_overlay
from magnet_triton.client.palettes import CITYSCAPES, DEEPGLOBE, generic_palette, get_palette
from magnet_triton.client.raster_run import RasterResult
from magnet_triton.client.result import SegmentResult

__all__ = [
    "CITYSCAPES",
    "DEEPGLOBE",
    "AsyncMagnetClient",
    "BadRequestError",
    "ConnectionFailedError",
    "DependencyMissingError",
    "MagnetClient",
    "MagnetClientError",
    "ModelRecoveringError",
    "RasterResult",
    "RequestTimeoutError",
    "SegmentResult",
    "ServerBusyError",
    "ServerError",
    "SharedMemoryError",
    "colorize",
    "generic_palette",
    "get_palette",
    "overlay",
    "write_overlay",
]
