"""Segmenting a raster of any size: windows the server admits, read one at a time, stitched on disk.

:func:`segment_raster` is :meth:`MagnetClient.segment_raster` and what ``magnet-client segment`` runs
for rasters. Memory stays bounded by the windows in flight (``max_concurrency`` of them, each at most
the server's pixel limit) and GDAL's block cache, whatever the raster's size: windows are read only
when a request slot frees, and each answer's kept part goes straight into a scratch GeoTIFF.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from magnet_triton.errors import MagnetError
from magnet_triton.raster.tiling import TilePlan, plan_windows

if TYPE_CHECKING:
    from magnet_triton.client.core import MagnetClient
    from magnet_triton.raster.bands import Scaling

log = logging.getLogger(__name__)

#: Files read as rasters (with rasterio, when installed) by ``magnet-client segment``.
RASTER_SUFFIXES = (".tif", ".tiff")
#: ``progress(done, total)`` over the windows of one raster.
WindowProgress = Callable[[int, int], None]
#: The maps a raster run can write, by the names ``outputs`` / ``--save`` use, and their sample types.
_MAP_DTYPES = {"segmentation": "uint8", "coarse": "uint8", "confidence": "float32"}
_RESULT_FIELDS = {"segmentation": "segmentation", "coarse": "coarse_segmentation", "confidence": "confidence"}


@dataclass(frozen=True)
class RasterResult:
    """What :func:`segment_raster` did.

    Attributes:
        source: the raster file.
        shape: (H, W) of the raster and of every map written.
        plan: the windows (one when the raster fits the server's limit), their size and overlap.
        bands: the 1-based bands read as R, G, B (or the one grey band).
        scaling: how the samples became 8 bits, stated (``"uint16 bands scaled ... band 1 [..]"``).
        georeferenced: whether the input carries a CRS or transform (then so does the GeoTIFF).
        files: what was written, by kind: ``segmentation`` (palette PNG), ``geotiff`` (the class map as
            a Cloud-Optimised GeoTIFF), ``coarse`` (PNG), ``confidence`` ((Geo)TIFF, float32),
            ``overlay`` (PNG).
        latency_s: seconds from the first window sent to the last file written.
    """

    source: str
    shape: tuple[int, int]
    plan: TilePlan
    bands: tuple[int, ...]
    scaling: str
    georeferenced: bool
    files: dict[str, Path] = field(default_factory=dict)
    latency_s: float = 0.0


def is_raster_path(path: str | os.PathLike) -> bool:
    """Whether ``magnet-client`` reads ``path`` as a raster (by its suffix)."""
    return Path(path).suffix.lower() in RASTER_SUFFIXES


def raster_outputs(
    path: str | os.PathLike, out: Path, save: Sequence[str], *, geotiff: bool, overlay: bool = False
) -> dict[str, Path]:
    """The files a raster run writes for ``path`` into ``out``, in the order they are written (the class
    map PNG last, as for images, so ``--resume`` never takes a half-done raster for a done one)."""
    stem = Path(path).stem
    files: dict[str, Path] = {}
    if "coarse" in save:
        files["coarse"] = out / f"{stem}_coarse.png"
    if "confidence" in save:
        files["confidence"] = out / f"{stem}_confidence.tiff"
    if overlay:
        files["overlay"] = out / f"{stem}_overlay.png"
    if geotiff:
        # Not <stem>.tif: with --out beside the inputs, that would be the input itself.
        files["geotiff"] = out / f"{stem}_classes.tif"
    files["segmentation"] = out / f"{stem}.png"
    return files


def is_georeferenced(path: str | os.PathLike) -> bool:
    """Whether the raster at ``path`` carries a CRS or a transform (reads its header only)."""
    from magnet_triton.raster import rasterio_module

    rasterio = rasterio_module()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return ds.crs is not None or not ds.transform.is_identity
    except rasterio.errors.RasterioIOError as e:
        raise MagnetError(f"cannot read {path} as a raster: {e}") from e


def segment_raster(
    client: MagnetClient,
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    bands: str | Sequence[int] | None = None,
    scaling: str | Scaling | None = None,
    outputs: Sequence[str] | None = (),
    palette: np.ndarray | None = None,
    geotiff: bool | None = None,
    overlay: bool = False,
    overlay_palette: str | np.ndarray = "auto",
    overlay_alpha: float = 0.5,
    window_size: tuple[int, int] | None = None,
    overlap: int | None = None,
    max_concurrency: int = 2,
    max_raster_pixels: int | None = None,
    progress: WindowProgress | None = None,
    via_shared_memory: bool = False,
    **overrides: Any,
) -> RasterResult:
    """Segment the raster at ``path`` and write its maps into the folder ``out``.

    Args:
        client: the client that sends the windows.
        path: a GeoTIFF, COG or other file GDAL reads.
        out: the folder for the files (:func:`raster_outputs` names them).
        bands: 1-based bands as R, G, B (three) or grey (one), e.g. ``(1, 2, 3)`` or ``"4,3,2"``;
            None: the file's own three (or one); any other count is refused, naming ``bands``.
        scaling: how samples become 8 bits (:data:`magnet_triton.raster.bands.SCALING_HELP`).
        outputs: beside the class map, ``"coarse"`` and/or ``"confidence"`` (None: both).
        palette: C x 3 uint8 colours of the class map PNG and GeoTIFF (None: a grey PNG of indices).
        geotiff: write ``<stem>_classes.tif``; None: when the input is georeferenced.
        overlay: also write ``<stem>_overlay.png`` (a raster that fits one window only).
        overlay_palette, overlay_alpha: its colours and weight (:func:`write_overlay`).
        window_size: (w, h) of the windows; None: the largest the server admits.
        overlap: least overlap of neighbouring windows in pixels; None: the preset's largest patch side.
        max_concurrency: windows in flight (and in memory) at once.
        max_raster_pixels: refuse a raster declaring more pixels, before reading it (the
            decompression-bomb guard); None: :data:`magnet_triton.raster.reader.MAX_RASTER_PIXELS`.
        progress: ``progress(done, total)`` after each window.
        via_shared_memory: send each window's pixels through system shared memory.
        overrides: the per-request options of :meth:`MagnetClient.segment`, for every window.

    Returns:
        a :class:`RasterResult`.

    Raises:
        MagnetError: the raster, its bands or its samples cannot be used as asked (the message says
            what to pass); BadRequestError and the other errors of :meth:`MagnetClient.segment`.
    """
    # Taken first, while the locals are the arguments alone.
    arguments = {k: v for k, v in locals().items() if k not in ("client", "path", "out", "overrides")}
    from magnet_triton.client.errors import BadRequestError
    from magnet_triton.client.limits import limit_from_refusal

    try:
        return _segment_raster(client, path, out, **arguments, **overrides)
    except BadRequestError as error:
        # The config's limit is what the plan used; a server that refuses a window for its size after
        # all (a config changed since it was read) names its real limit: plan again with it, once.
        refused_at = limit_from_refusal(str(error))
        planned = client.served_limits().max_image_pixels
        if refused_at is None or refused_at >= planned or window_size is not None:
            raise
        log.warning(
            "%s refused a window over its limit of %d pixels; cutting smaller windows", client.url, refused_at
        )
        client._limits = dataclasses.replace(client.served_limits(), max_image_pixels=refused_at)
        return _segment_raster(client, path, out, **arguments, **overrides)


def _segment_raster(
    client: MagnetClient,
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    bands: str | Sequence[int] | None,
    scaling: str | Scaling | None,
    outputs: Sequence[str] | None,
    palette: np.ndarray | None,
    geotiff: bool | None,
    overlay: bool,
    overlay_palette: str | np.ndarray,
    overlay_alpha: float,
    window_size: tuple[int, int] | None,
    overlap: int | None,
    max_concurrency: int,
    max_raster_pixels: int | None,
    progress: WindowProgress | None,
    via_shared_memory: bool,
    **overrides: Any,
) -> RasterResult:
    from magnet_triton.client.base import check_concurrency, segment_options
    from magnet_triton.raster.reader import MAX_RASTER_PIXELS, RasterSource
    from magnet_triton.raster.writer import MapCanvas, gdal_environment

    check_concurrency(max_concurrency)
    if outputs is None:  # as for segment(): every map
        outputs = ("coarse", "confidence")
    save = [str(o).lower() for o in ([outputs] if isinstance(outputs, str) else outputs)]
    # Every option is checked once here, before the raster is opened; each window is sent with them.
    send = {"via_shared_memory": via_shared_memory, "outputs": save, **overrides}
    segment_options(**send)
    wanted = ["segmentation", *(o for o in ("coarse", "confidence") if o in save)]
    limits = client.served_limits()
    out = Path(out)
    with (
        gdal_environment(),
        RasterSource(
            path,
            bands=tuple(bands) if bands is not None and not isinstance(bands, str) else bands,
            scaling=scaling,
            max_pixels=MAX_RASTER_PIXELS if max_raster_pixels is None else max_raster_pixels,
        ) as source,
    ):
        plan = _plan(source.height, source.width, limits, window_size, overlap)
        if overlay and plan.tiled:
            raise MagnetError(
                f"{source.source} is cut into {len(plan.windows)} windows (over the server's limit of "
                f"{limits.max_image_pixels} pixels); an overlay needs it whole: leave out --overlay and "
                "lay the class map GeoTIFF over the raster in a GIS instead"
            )
        georeferenced = source.georeferenced
        files = raster_outputs(
            path, out, save, geotiff=georeferenced if geotiff is None else geotiff, overlay=overlay
        )
        _refuse_overwriting(Path(path), files)
        log.info(
            "%s: %d x %d pixels in %d window(s) of %d x %d, overlap %d; %s",
            source.source,
            source.width,
            source.height,
            len(plan.windows),
            *plan.window_size,
            plan.overlap,
            source.ranges.description,
        )
        georeferencing = {"crs": source.crs, "transform": source.transform} if georeferenced else {}
        canvases = {
            name: MapCanvas(
                files["geotiff"] if name == "segmentation" and "geotiff" in files else files[name],
                height=source.height,
                width=source.width,
                dtype=_MAP_DTYPES[name],
                palette=palette if _MAP_DTYPES[name] == "uint8" else None,
                **georeferencing,
            )
            for name in wanted
        }
        started = time.perf_counter()
        last_window: dict[str, Any] = {}
        try:
            pixels = _window_pixels(source, plan, last_window if overlay else None)
            answers = client.segment_iter(pixels, max_concurrency=max_concurrency, **send)
            for done, (index, result) in enumerate(answers, start=1):
                window = plan.windows[index]
                rows, cols = window.keep_slices
                for name, canvas in canvases.items():
                    answer = getattr(result, _RESULT_FIELDS[name])
                    canvas.write(answer[rows, cols], window.keep_row, window.keep_col)
                if overlay:
                    last_window["segmentation"] = result.segmentation
                if progress is not None:
                    progress(done, len(plan.windows))
            if overlay:  # before the class map, which comes last
                from magnet_triton.client.overlay import write_overlay

                write_overlay(
                    files["overlay"],
                    last_window["pixels"],
                    last_window["segmentation"],
                    overlay_palette,
                    overlay_alpha,
                    num_classes=None if palette is None else len(palette),
                )
            _export(canvases, files)
        finally:
            for canvas in canvases.values():
                canvas.discard()
        return RasterResult(
            source=source.source,
            shape=(source.height, source.width),
            plan=plan,
            bands=source.bands,
            scaling=source.ranges.description,
            georeferenced=georeferenced,
            files=files,
            latency_s=time.perf_counter() - started,
        )


def _plan(
    height: int, width: int, limits: Any, window_size: tuple[int, int] | None, overlap: int | None
) -> TilePlan:
    asked = limits.default_overlap if overlap is None else int(overlap)
    plan = plan_windows(
        height, width, max_pixels=limits.max_image_pixels, overlap=asked, window_size=window_size
    )
    if overlap is not None and plan.tiled and plan.overlap < overlap:
        raise MagnetError(
            f"an overlap of {overlap} pixels does not fit {plan.window_size[0]}x{plan.window_size[1]} "
            f"windows: at most {plan.overlap} (a quarter of the window's short side); pass a smaller "
            "overlap or larger windows"
        )
    return plan


def _window_pixels(source: Any, plan: TilePlan, keep: dict[str, Any] | None) -> Iterator[np.ndarray]:
    """Each window's RGB pixels, read only when the sender asks for the next one."""
    for window in plan.windows:
        pixels = source.read(window)
        if keep is not None:
            keep["pixels"] = pixels  # the overlay of a one-window raster needs them again
        yield pixels


def _refuse_overwriting(path: Path, files: dict[str, Path]) -> None:
    for output in files.values():
        if output.exists() and output.resolve() == path.resolve():
            raise MagnetError(f"{output} is the input itself; write the results into another folder (--out)")


def _export(canvases: dict[str, Any], files: dict[str, Path]) -> None:
    """The final files, in the order of ``files`` (the class map PNG last)."""
    for name, destination in files.items():
        if name == "overlay":
            continue
        if name == "geotiff":
            canvases["segmentation"].export(destination, "geotiff")
        elif name == "confidence":
            canvases["confidence"].export(destination, "geotiff")
        else:
            canvases[name].export(destination, "png")


__all__ = [
    "RASTER_SUFFIXES",
    "RasterResult",
    "is_georeferenced",
    "is_raster_path",
    "raster_outputs",
    "segment_raster",
]
