"""GeoTIFFs written for the raster tests (rasterio): one writer, so that every test's file is made alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_geotiff(path: Path, data: np.ndarray, **profile: Any) -> tuple[Any, Any]:
    """``data`` (bands x H x W, any dtype rasterio writes) as a GeoTIFF at ``path``, in UTM 31N with
    half-metre pixels; ``profile`` adds creation options (``tiled``, ``blockxsize``, ``compress``, ...).

    Returns:
        (crs, transform) written, to compare an output's georeferencing with.
    """
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    crs, transform = CRS.from_epsg(32631), from_origin(440_000.0, 5_300_000.0, 0.5, 0.5)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        **profile,
    ) as ds:
        ds.write(data)
    return crs, transform
