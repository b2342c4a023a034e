"""Rasters (GeoTIFF, COG, any file GDAL reads) in and out, window by window, for images too large or
too deep for the PNG/JPEG path: band choice and 8-bit scaling (:mod:`.bands`), windows and stitching
geometry (:mod:`.tiling`), reading (:mod:`.reader`) and georeferenced outputs (:mod:`.writer`).

The reader and writer need rasterio, the ``raster`` extra (``pip install 'magnet-triton[raster]'``);
:func:`rasterio_module` imports it on first use and says so when it is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from magnet_triton.errors import MagnetError

RASTER_HINT = "install the raster extra: pip install 'magnet-triton[raster]' (or rasterio)"


class RasterDependencyMissing(MagnetError, ImportError):
    """rasterio is not installed, and a raster was asked for."""


def rasterio_module(what: str = "reading a raster") -> ModuleType:
    """``rasterio``, or a :class:`RasterDependencyMissing` that names the extra."""
    try:
        return importlib.import_module("rasterio")
    except ImportError as e:
        raise RasterDependencyMissing(
            f"{what} needs rasterio, which cannot be imported ({e}); {RASTER_HINT}"
        ) from e


def rasterio_available() -> bool:
    """Whether rasterio can be imported (without importing it twice)."""
    try:
        rasterio_module()
    except RasterDependencyMissing:
        return False
    return True
