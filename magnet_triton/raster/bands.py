"""Which bands of a raster become the R, G, B the networks see, and how their samples become 8 bits.

Pure logic on numpy arrays (no file access), so the rules are tested directly:

- Bands: three bands are R, G, B in the order given; one band is grey, repeated into all three.
  Without a choice, a raster is taken as it is only when that is unambiguous: three bands (or three
  and an alpha band, which is dropped as a PNG's alpha is) or one. Anything else is refused, naming
  ``--bands``.
- Scaling: 8-bit samples are sent as they are unless a scaling is asked for. Any other sample type
  (16-bit, 32-bit, float) is mapped linearly from a per-band range [low, high] to 0..255 (clipped,
  rounded), with the range from one of: ``fixed:LOW,HIGH`` (the same for every band), ``percentile:P,Q``
  (each band's P-th and Q-th percentiles over the whole raster, sampled), or ``stats`` (each band's
  minimum and maximum from the file's own statistics). The default for non-8-bit rasters is
  ``percentile:2,98``, and the range used is reported with the result, never applied silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from magnet_triton.errors import MagnetError

#: What a raster with more than 8 bits per sample is scaled by unless told otherwise.
DEFAULT_DEEP_SCALING = "percentile:2,98"
SCALING_KINDS = ("none", "fixed", "percentile", "stats")
SCALING_HELP = (
    "how samples become 8 bits: none (8-bit rasters only), fixed:LOW,HIGH, percentile:P,Q (per band, "
    f"over the raster) or stats (per band, the file's min and max); default: none for 8-bit rasters, "
    f"{DEFAULT_DEEP_SCALING} otherwise"
)


@dataclass(frozen=True)
class Scaling:
    """A scaling asked for: ``kind`` in :data:`SCALING_KINDS` and its two numbers (fixed and
    percentile; None otherwise)."""

    kind: str
    low: float | None = None
    high: float | None = None

    def __str__(self) -> str:
        if self.low is None:
            return self.kind
        return f"{self.kind}:{self.low:g},{self.high:g}"


def parse_scaling(text: str | Scaling | None) -> Scaling | None:
    """``"percentile:2,98"`` -> :class:`Scaling`; None: the default for the raster's sample type."""
    if text is None or isinstance(text, Scaling):
        return text
    kind, _, numbers = str(text).strip().lower().partition(":")
    if kind not in SCALING_KINDS:
        raise MagnetError(f"unknown scaling {text!r}; {SCALING_HELP}")
    if kind in ("none", "stats"):
        if numbers:
            raise MagnetError(f"scaling {kind!r} takes no numbers, got {text!r}")
        return Scaling(kind)
    try:
        low, high = (float(v) for v in numbers.split(","))
    except ValueError:
        raise MagnetError(f"scaling {kind} takes two numbers, {kind}:LOW,HIGH; got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise MagnetError(f"scaling {text!r} needs finite LOW < HIGH")
    if kind == "percentile" and not 0 <= low < high <= 100:
        raise MagnetError(f"percentiles must satisfy 0 <= P < Q <= 100, got {text!r}")
    return Scaling(kind, low, high)


@dataclass(frozen=True)
class BandRanges:
    """The linear map of each chosen band to 0..255: ``lows``/``highs`` per band, or None for samples
    sent as they are (8-bit, scaling ``none``). ``description`` states it for the user."""

    lows: tuple[float, ...] | None
    highs: tuple[float, ...] | None
    description: str

    @property
    def identity(self) -> bool:
        return self.lows is None


def parse_bands(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"1,2,3"`` (1-based band numbers, as GDAL counts them) -> ``(1, 2, 3)``; None: no choice."""
    if text is None:
        return None
    if isinstance(text, str):
        try:
            bands = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
        except ValueError:
            raise MagnetError(f"--bands takes band numbers from 1, e.g. 1,2,3; got {text!r}") from None
    else:
        bands = tuple(int(v) for v in text)
    if len(bands) not in (1, 3):
        raise MagnetError(
            f"choose three bands (red, green, blue: e.g. 1,2,3) or one (grey), got {len(bands)}: {text!r}"
        )
    if any(b < 1 for b in bands):
        raise MagnetError(f"band numbers start at 1 (as in GDAL), got {text!r}")
    return bands


def choose_bands(
    count: int, alpha_bands: Sequence[int], requested: tuple[int, ...] | None, source: str
) -> tuple[int, ...]:
    """The 1-based bands read as R, G, B (three) or grey (one).

    Args:
        count: bands in the file.
        alpha_bands: those the file marks as alpha (a mask, not data).
        requested: :func:`parse_bands`'s answer.
        source: the file, for messages.
    """
    if requested is not None:
        missing = [b for b in requested if b > count]
        if missing:
            raise MagnetError(
                f"{source} has {count} band(s); there is no band {missing[0]} (bands count from 1)"
            )
        return requested
    data = [b for b in range(1, count + 1) if b not in set(alpha_bands)]
    if len(data) in (1, 3):
        return tuple(data)
    raise MagnetError(
        f"{source} has {count} bands{f' ({len(data)} besides alpha)' if alpha_bands else ''}; the networks "
        "take three (red, green, blue) or one (grey): pass --bands with the three to use, e.g. "
        f"--bands 1,2,3 (bands={tuple(range(1, 4))!r} in the library), or one band"
    )


def resolve_ranges(
    dtype: np.dtype,
    bands: Sequence[int],
    scaling: Scaling | None,
    *,
    percentiles: Sequence[tuple[float, float]] | None = None,
    stats: Sequence[tuple[float, float]] | None = None,
    source: str = "the raster",
) -> BandRanges:
    """The per-band ranges for ``scaling`` on samples of ``dtype``.

    ``percentiles`` / ``stats``: per band, the (low, high) the reader measured for a ``percentile`` or
    ``stats`` scaling (it reads the raster; this function does not).
    """
    dtype = np.dtype(dtype)
    if scaling is None:
        scaling = Scaling("none") if dtype == np.uint8 else parse_scaling(DEFAULT_DEEP_SCALING)
    assert scaling is not None
    names = ",".join(str(b) for b in bands)
    if scaling.kind == "none":
        if dtype != np.uint8:
            raise MagnetError(
                f"{source} has {dtype} samples, which do not fit in 8 bits as they are: pass a scaling "
                f"(--scale fixed:LOW,HIGH, percentile:P,Q or stats), e.g. --scale {DEFAULT_DEEP_SCALING}"
            )
        return BandRanges(None, None, f"{dtype} bands {names} sent as they are")
    if scaling.kind == "fixed":
        lows = (float(scaling.low),) * len(bands)  # type: ignore[arg-type]
        highs = (float(scaling.high),) * len(bands)  # type: ignore[arg-type]
        return BandRanges(
            lows, highs, f"{dtype} bands {names} scaled to 8 bits from [{scaling.low:g}, {scaling.high:g}]"
        )
    measured = percentiles if scaling.kind == "percentile" else stats
    if measured is None or len(measured) != len(bands):
        raise ValueError(f"a {scaling.kind} scaling needs the measured range of each band")
    lows = tuple(float(lo) for lo, _ in measured)
    highs = tuple(float(hi) for _, hi in measured)
    ranges = ", ".join(f"band {b} [{lo:g}, {hi:g}]" for b, (lo, hi) in zip(bands, measured))
    how = (
        f"{scaling.low:g}-{scaling.high:g} percentiles"
        if scaling.kind == "percentile"
        else "the file's statistics"
    )
    return BandRanges(lows, highs, f"{dtype} bands scaled to 8 bits by {how}: {ranges}")


def to_rgb8(block: np.ndarray, ranges: BandRanges) -> np.ndarray:
    """Bands x H x W samples (one or three bands, any numeric dtype) -> H x W x 3 uint8 RGB.

    Values map linearly from [low, high] to [0, 255], rounded and clipped; a single band is repeated
    into R, G and B. NaN samples become 0.
    """
    if block.ndim != 3 or block.shape[0] not in (1, 3):
        raise ValueError(f"expected 1 or 3 bands x H x W, got {block.shape}")
    if ranges.identity:
        if block.dtype != np.uint8:
            raise ValueError(f"unscaled samples must be uint8, got {block.dtype}")
        planes = block
    else:
        assert ranges.lows is not None and ranges.highs is not None
        lows = np.asarray(ranges.lows, dtype=np.float32).reshape(-1, 1, 1)
        highs = np.asarray(ranges.highs, dtype=np.float32).reshape(-1, 1, 1)
        # A flat band (high == low) maps to 0 rather than dividing by zero.
        span = np.where(highs > lows, highs - lows, np.inf)
        scaled = (block.astype(np.float32) - lows) * (255.0 / span)
        planes = np.nan_to_num(np.rint(scaled), nan=0.0).clip(0, 255).astype(np.uint8)
    if planes.shape[0] == 1:
        planes = np.repeat(planes, 3, axis=0)
    return np.ascontiguousarray(planes.transpose(1, 2, 0))
