"""``magnet-client segment`` for rasters: the options, and the run over each raster's windows.

A file is a raster when its suffix is ``.tif``/``.tiff`` and rasterio (the ``raster`` extra) is
installed, or whenever ``--bands`` or ``--scale`` is given. Rasters are read here, window by window,
and sent as pixels; everything else goes the image path of :mod:`magnet_triton.client.cli`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from magnet_triton.client.errors import BadRequestError, ConnectionFailedError, MagnetClientError
from magnet_triton.errors import MagnetError

log = logging.getLogger(__name__)


def add_raster_arguments(parser: argparse.ArgumentParser) -> None:
    from magnet_triton.raster.bands import SCALING_HELP

    group = parser.add_argument_group(
        "rasters (GeoTIFF, COG, 16-bit, multiband; the raster extra: pip install 'magnet-triton[raster]')"
    )
    group.add_argument(
        "--bands",
        default=None,
        metavar="R,G,B",
        help="the bands (from 1) sent as red, green, blue, or one band sent as grey; needed for files "
        "with other than 1 or 3 bands",
    )
    group.add_argument("--scale", default=None, metavar="HOW", help=SCALING_HELP)
    group.add_argument(
        "--window",
        default=None,
        metavar="WxH",
        help="window size for rasters over the server's pixel limit (default: the largest it admits)",
    )
    group.add_argument(
        "--overlap",
        type=int,
        default=None,
        metavar="PX",
        help="least overlap of neighbouring windows (default: the served preset's patch size)",
    )
    group.add_argument(
        "--no-geotiff",
        action="store_true",
        help="do not write <stem>_classes.tif (written by default for georeferenced rasters)",
    )
    group.add_argument(
        "--max-raster-pixels",
        type=int,
        default=None,
        metavar="N",
        help="refuse rasters declaring more pixels, before reading them (default 4e9)",
    )


def parse_window(text: str | None) -> tuple[int, int] | None:
    """``"2048x2048"`` -> (2048, 2048)."""
    if text is None:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BadRequestError(
            f"--window takes WIDTHxHEIGHT in pixels, e.g. 2048x2048; got {text!r}"
        ) from None
    if width < 1 or height < 1:
        raise BadRequestError(f"--window must be at least 1x1, got {text!r}")
    return width, height


def check_raster_arguments(args: argparse.Namespace) -> None:
    """Fail once, before any file is read, on a bad raster option."""
    from magnet_triton.raster.bands import parse_bands, parse_scaling

    try:
        parse_bands(args.bands)
        parse_scaling(args.scale)
    except MagnetError as e:
        raise BadRequestError(str(e)) from None
    parse_window(args.window)
    if args.overlap is not None and args.overlap < 0:
        raise BadRequestError(f"--overlap must be >= 0 pixels, got {args.overlap}")


def is_raster_input(path: Path, args: argparse.Namespace) -> bool:
    """Whether ``path`` takes the raster path (see the module docstring)."""
    from magnet_triton.client.raster_run import is_raster_path
    from magnet_triton.raster import rasterio_available, rasterio_module

    if args.bands is not None or args.scale is not None:
        rasterio_module("--bands and --scale")  # a clear error naming the extra when it is missing
        return True
    return is_raster_path(path) and rasterio_available()


def raster_files(path: Path, args: argparse.Namespace, save: Sequence[str]) -> list[Path]:
    """The files a raster gives (for --resume and the clean-up of a killed run's leftovers)."""
    from magnet_triton.client.raster_run import is_georeferenced, raster_outputs

    geotiff = not args.no_geotiff and path.is_file() and is_georeferenced(path)
    return list(raster_outputs(path, args.out, save, geotiff=geotiff, overlay=args.overlay).values())


def run_rasters(
    client: Any,
    rasters: Sequence[Path],
    args: argparse.Namespace,
    *,
    save: Sequence[str],
    palette: np.ndarray | None,
    overrides: dict[str, Any],
) -> tuple[int, int]:
    """Segment each raster in turn, its windows ``--concurrency`` at a time, with a progress bar over
    the windows; returns (exit status, rasters written)."""
    from magnet_triton.client.cli import exit_code
    from magnet_triton.client.progress import ProgressBar

    status, written = 0, 0
    for path in rasters:
        bar = ProgressBar(0, enabled=None if not args.quiet else False)

        def progress(done: int, total: int, bar: ProgressBar = bar) -> None:
            bar.total = total
            bar.update(done)

        try:
            with bar:
                result = client.segment_raster(
                    path,
                    args.out,
                    bands=args.bands,
                    scaling=args.scale,
                    outputs=save,
                    palette=palette,
                    geotiff=False if args.no_geotiff else None,
                    overlay=args.overlay,
                    overlay_palette=args.palette,
                    overlay_alpha=args.alpha,
                    window_size=parse_window(args.window),
                    overlap=args.overlap,
                    max_concurrency=args.concurrency,
                    max_raster_pixels=args.max_raster_pixels,
                    progress=progress,
                    via_shared_memory=args.shared_memory,
                    **overrides,
                )
                if not args.quiet:
                    plan = result.plan
                    windows = (
                        f"{len(plan.windows)} windows of {plan.window_size[0]}x{plan.window_size[1]}, "
                        f"overlap {plan.overlap}"
                        if plan.tiled
                        else "one request"
                    )
                    bar.note(f"{path}: {result.shape[1]}x{result.shape[0]} in {windows}; {result.scaling}")
            written += 1
        except (MagnetClientError, MagnetError) as error:
            print(f"magnet-client: error: {path}: {error}", file=sys.stderr)
            status = max(status, exit_code(error))
            if isinstance(error, ConnectionFailedError):
                break
    return status, written
