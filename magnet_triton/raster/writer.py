"""Writing stitched maps window by window, then as GeoTIFF (Cloud-Optimised) and PNG (rasterio).

A :class:`MapCanvas` is a tiled, compressed scratch GeoTIFF beside the final file: each window's kept
part is written into it as it arrives, so no map is ever whole in memory. When every window is in,
:meth:`MapCanvas.export` copies it into the final formats (GDAL's CreateCopy, which streams by blocks)
through a temporary name, so a reader sees a whole file or none.
"""

from __future__ import annotations

import importlib
import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from magnet_triton.errors import MagnetError
from magnet_triton.raster import rasterio_module

#: Tile side of the scratch canvas and of the GeoTIFF outputs.
BLOCK = 512
#: GDAL's block cache while a raster is processed, in MB: it holds the canvas blocks that windows are
#: still filling, and bounds what GDAL keeps however large the raster.
GDAL_CACHE_MB = 256


@contextmanager
def gdal_environment() -> Iterator[None]:
    """GDAL settings for a run: a bounded block cache, and no ``.aux.xml`` side files (the PNG of a
    georeferenced map would otherwise get one holding its CRS)."""
    rasterio = rasterio_module()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GDAL_PAM_ENABLED="NO"):
        yield


def _temporary_beside(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.{tag}"


class MapCanvas:
    """One H x W single-band map (uint8 classes, float32 confidence) being stitched.

    Args:
        scratch_for: the final file it will become; the scratch file goes beside it, hidden.
        height, width: the raster's size.
        dtype: ``uint8`` or ``float32``.
        crs, transform: the input's georeferencing (None: none).
        palette: C x 3 uint8 class colours, stored as the band's colour table (uint8 maps only).
    """

    def __init__(
        self,
        scratch_for: Path,
        *,
        height: int,
        width: int,
        dtype: str,
        crs: Any = None,
        transform: Any = None,
        palette: np.ndarray | None = None,
    ) -> None:
        rasterio = rasterio_module("writing a raster map")
        self.height, self.width, self.dtype = height, width, np.dtype(dtype)
        scratch_for.parent.mkdir(parents=True, exist_ok=True)
        self.path = _temporary_beside(scratch_for, "canvas.tif")
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": 1,
            "dtype": self.dtype.name,
            "tiled": True,
            "blockxsize": BLOCK,
            "blockysize": BLOCK,
            # Fast compression: the canvas only lives until the outputs are copied from it.
            "compress": "deflate",
            "zlevel": 1,
            "BIGTIFF": "IF_SAFER",
        }
        if crs is not None:
            profile["crs"] = crs
        if transform is not None and not transform.is_identity:
            profile["transform"] = transform
        try:
            with warnings.catch_warnings():
                # A map of a raster without georeferencing has none either: nothing to warn about.
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self._dataset = rasterio.open(self.path, "w", **profile)
        except rasterio.errors.RasterioIOError as e:
            raise MagnetError(f"cannot write {self.path}: {e}") from e
        if palette is not None:
            colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
            self._dataset.write_colormap(1, {i: (*map(int, c), 255) for i, c in enumerate(colours)})

    def write(self, array: np.ndarray, row: int, col: int) -> None:
        """Write an h x w block with its top-left corner at (``row``, ``col``)."""
        rasterio = rasterio_module()
        if array.ndim != 2 or array.dtype != self.dtype:
            raise ValueError(f"expected an h x w {self.dtype} block, got {array.dtype} {array.shape}")
        window = rasterio.windows.Window(col, row, array.shape[1], array.shape[0])
        self._dataset.write(np.ascontiguousarray(array), 1, window=window)

    def close(self) -> None:
        """Flush the canvas to disk; :meth:`export` needs it closed."""
        if not self._dataset.closed:
            self._dataset.close()

    def export(self, destination: Path, kind: str) -> None:
        """Copy the (closed) canvas to ``destination`` as ``kind``, atomically.

        ``kind``: ``geotiff`` (a Cloud-Optimised GeoTIFF: tiled, DEFLATE, overviews; nearest-neighbour
        overviews for class maps, averaged ones for the confidence), or ``png`` (8-bit, with the
        colour table as its palette when there is one; PNG holds no georeferencing).
        """
        rasterio = rasterio_module()
        copy = importlib.import_module("rasterio.shutil").copy

        self.close()
        if kind == "png":
            driver, options = "PNG", {"ZLEVEL": 6}
        elif kind == "geotiff":
            resampling = "NEAREST" if self.dtype == np.uint8 else "AVERAGE"
            if _has_driver("COG"):
                driver = "COG"
                options = {"COMPRESS": "DEFLATE", "BLOCKSIZE": BLOCK, "RESAMPLING": resampling}
                if self.dtype != np.uint8:
                    options["PREDICTOR"] = "YES"
            else:  # GDAL < 3.1: a tiled, compressed GeoTIFF, without the COG layout
                driver = "GTiff"
                options = {"TILED": "YES", "COMPRESS": "DEFLATE", "BLOCKXSIZE": BLOCK, "BLOCKYSIZE": BLOCK}
        else:
            raise ValueError(f"unknown output kind {kind!r}")
        partial = _temporary_beside(destination, "partial")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                copy(self.path, partial, driver=driver, **options)
            os.replace(partial, destination)
        except (OSError, rasterio.errors.RasterioError) as e:
            raise MagnetError(f"cannot write {destination}: {e}") from e
        finally:
            partial.unlink(missing_ok=True)

    def discard(self) -> None:
        """Close and delete the scratch file."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> MapCanvas:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()


def _has_driver(name: str) -> bool:
    rasterio = rasterio_module()
    with rasterio.Env() as env:
        return name in env.drivers()
