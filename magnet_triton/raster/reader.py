"""Reading a raster window by window as the H x W x 3 uint8 RGB the server takes (rasterio).

Why rasterio rather than tifffile: GDAL reads any window of a tiled or striped GeoTIFF, a COG, a VRT
and most other raster formats without reading the rest, reads decimated overviews for the scaling's
statistics, and keeps the CRS and transform the outputs must carry; tifffile reads TIFF only and
leaves georeferencing and windowed striped reads to the caller.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from magnet_triton.errors import ImageTooLarge, MagnetError
from magnet_triton.imageio import MAX_DECODE_PIXELS
from magnet_triton.raster import rasterio_module
from magnet_triton.raster.bands import (
    DEFAULT_DEEP_SCALING,
    BandRanges,
    Scaling,
    choose_bands,
    parse_bands,
    parse_scaling,
    resolve_ranges,
    to_rgb8,
)
from magnet_triton.raster.tiling import Window

log = logging.getLogger(__name__)

#: A raster declaring more pixels than this is refused on its header, before anything is read or
#: written (its class map alone would be this many bytes): 4 gigapixels, a 63000 x 63000 scene.
MAX_RASTER_PIXELS = 4_000_000_000
#: Pixels read (decimated, from overviews where the file has them) to measure percentiles.
PERCENTILE_SAMPLE_PIXELS = 1 << 20


class RasterSource:
    """An open raster with its bands and scaling chosen; :meth:`read` gives one window as RGB.

    A context manager; not thread-safe (GDAL datasets are not), so read from one thread.

    Args:
        path: a file GDAL opens (GeoTIFF, COG, VRT, ...).
        bands: 1-based band numbers (three: R, G, B; one: grey), as a tuple or ``"1,2,3"``; None:
            the file's own three or one (see :mod:`magnet_triton.raster.bands`).
        scaling: ``none``, ``fixed:LOW,HIGH``, ``percentile:P,Q`` or ``stats``; None: ``none`` for
            8-bit rasters, ``percentile:2,98`` otherwise.
        max_pixels: refuse a raster declaring more pixels (the decompression-bomb guard).

    Raises:
        MagnetError: the file cannot be read, or its bands or samples cannot be represented without
            a choice; the message says what to pass. RasterDependencyMissing: no rasterio.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        bands: str | tuple[int, ...] | None = None,
        scaling: str | Scaling | None = None,
        max_pixels: int = MAX_RASTER_PIXELS,
    ) -> None:
        rasterio = rasterio_module()
        self.path = Path(path)
        self.source = str(path)
        requested, asked = parse_bands(bands), parse_scaling(scaling)  # bad options fail before opening
        if not self.path.is_file():
            raise MagnetError(f"no such raster file: {self.path}; check the path")
        try:
            with warnings.catch_warnings():
                # A plain (not georeferenced) TIFF is fine: its outputs are plain too.
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self._dataset = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as e:
            raise MagnetError(f"cannot read {self.path} as a raster: {e}") from e
        try:
            self._setup(requested, asked, max_pixels)
        except BaseException:
            self._dataset.close()
            raise

    def _setup(self, requested: tuple[int, ...] | None, asked: Scaling | None, max_pixels: int) -> None:
        ds = self._dataset
        self.width, self.height = int(ds.width), int(ds.height)
        if self.width * self.height > max_pixels:
            raise ImageTooLarge(
                f"{self.source} declares {self.width}x{self.height} = {self.width * self.height} pixels, "
                f"over the raster limit of {max_pixels}; raise max_raster_pixels (--max-raster-pixels) "
                "if the scene is really this large"
            )
        alpha = [i for i, ci in enumerate(ds.colorinterp, start=1) if ci.name == "alpha"]
        self.bands = choose_bands(int(ds.count), alpha, requested, self.source)
        dtypes = {np.dtype(ds.dtypes[b - 1]) for b in self.bands}
        if len(dtypes) != 1:
            raise MagnetError(
                f"{self.source}: bands {self.bands} have different sample types {sorted(map(str, dtypes))}; "
                "choose bands of one type"
            )
        self.dtype = dtypes.pop()
        if self.dtype.kind not in "uif" or self.dtype == np.bool_:
            raise MagnetError(
                f"{self.source} has {self.dtype} samples; only integer and real rasters are read"
            )
        percentiles = stats = None
        if (asked is not None and asked.kind == "percentile") or (asked is None and self.dtype != np.uint8):
            chosen = asked or parse_scaling(DEFAULT_DEEP_SCALING)
            assert chosen is not None
            percentiles = self._percentiles(chosen.low or 0.0, chosen.high or 100.0)
        elif asked is not None and asked.kind == "stats":
            stats = self._statistics()
        self.ranges: BandRanges = resolve_ranges(
            self.dtype, self.bands, asked, percentiles=percentiles, stats=stats, source=self.source
        )
        log.info("%s: %s", self.source, self.ranges.description)

    # ---------------------------------------------------------------- what the outputs need
    @property
    def crs(self) -> Any:
        return self._dataset.crs

    @property
    def transform(self) -> Any:
        return self._dataset.transform

    @property
    def georeferenced(self) -> bool:
        """Whether the file places its pixels on the Earth (a CRS, or a transform other than pixels)."""
        return self._dataset.crs is not None or not self._dataset.transform.is_identity

    # ---------------------------------------------------------------- reading
    def read(self, window: Window) -> np.ndarray:
        """The pixels of ``window`` as H x W x 3 uint8 RGB, scaled as :attr:`ranges` states."""
        rasterio = rasterio_module()
        try:
            block = self._dataset.read(
                list(self.bands),
                window=rasterio.windows.Window(window.col, window.row, window.width, window.height),
            )
        except rasterio.errors.RasterioError as e:
            raise MagnetError(
                f"cannot read rows {window.row}-{window.row + window.height} of {self.source}: damaged or "
                f"truncated ({e})"
            ) from e
        return to_rgb8(block, self.ranges)

    def _sample(self) -> np.ndarray:
        """Bands x h x w, a decimated read of the whole raster (nodata and NaN as NaN), float64."""
        rasterio = rasterio_module()
        factor = max(1, math.ceil(math.sqrt(self.width * self.height / PERCENTILE_SAMPLE_PIXELS)))
        shape = (len(self.bands), max(1, self.height // factor), max(1, self.width // factor))
        sample = self._dataset.read(
            list(self.bands), out_shape=shape, resampling=rasterio.enums.Resampling.nearest, masked=True
        )
        return np.ma.filled(sample.astype(np.float64), np.nan)

    def _percentiles(self, low: float, high: float) -> list[tuple[float, float]]:
        ranges = []
        for band in self._sample():
            valid = band[np.isfinite(band)]
            if valid.size == 0:
                ranges.append((0.0, 1.0))
                continue
            lo, hi = np.percentile(valid, [low, high])
            ranges.append((float(lo), float(hi)))
        return ranges

    def _statistics(self) -> list[tuple[float, float]]:
        ranges = []
        for band in self.bands:
            tags = self._dataset.tags(band)
            if "STATISTICS_MINIMUM" in tags and "STATISTICS_MAXIMUM" in tags:
                ranges.append((float(tags["STATISTICS_MINIMUM"]), float(tags["STATISTICS_MAXIMUM"])))
                continue
            # No statistics in the file: GDAL computes them (approximately, from overviews if any).
            found = self._dataset.stats(indexes=[band], approx=True)[0]
            ranges.append((float(found.min), float(found.max)))
        return ranges

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._dataset.close()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_raster(
    path: str | os.PathLike,
    *,
    bands: str | tuple[int, ...] | None = None,
    scaling: str | Scaling | None = None,
    max_pixels: int = MAX_DECODE_PIXELS,
) -> np.ndarray:
    """A whole raster as H x W x 3 uint8 RGB (for ``MagnetClient.segment(array)``), refused over
    ``max_pixels``; :meth:`MagnetClient.segment_raster` reads larger ones window by window."""
    from magnet_triton.raster.tiling import plan_windows

    with RasterSource(path, bands=bands, scaling=scaling, max_pixels=max_pixels) as source:
        whole = plan_windows(source.height, source.width, max_pixels=max_pixels, overlap=0).windows[0]
        return source.read(whole)
