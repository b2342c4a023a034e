"""MagNet settings: frozen, validated, with the four published presets.

Sizes are always ``(width, height)`` in pixels, as in ``magnet-spec.md``. A :class:`Settings` is checked
when it is made, so an impossible combination fails here with a message instead of deep inside the
pipeline or the server.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from magnet_triton.errors import MagnetError
from magnet_triton.networks.registry import BACKBONES

MODES = ("magnet", "magnet-fast", "downsample", "patching")
PATCH_ORDERS = ("uncertain-first", "official")
#: Class maps are sent as uint8, so class indices must fit in it.
MAX_CLASSES = 255

Size = tuple[int, int]


@dataclass(frozen=True)
class Settings:
    """Everything the MagNet loop needs to know about one model.

    Attributes:
        scales: (W, H) of each magnification, coarse to fine; the first is exactly one patch.
        crop_size: (w, h) of the patches cut from each scaled image.
        input_size: (w, h) every patch is resized to before a network sees it.
        num_classes: C, the number of classes.
        backbone: network name, one of :data:`BACKBONES`.
        n_refiners: refiners in the checkpoint set; transition i uses ``min(n_refiners, i) - 1``.
        n_points: > 1: at most this many points per scale; in (0, 1]: a fraction of the pixels.
        n_patches: -1 every patch (MagNet), k > 0 the k most uncertain (MagNet-Fast).
        smooth_kernel: odd median-filter window for the error map.
        mode: one of :data:`MODES`.
        patch_order: ``uncertain-first`` (the paper) or ``official`` (the authors' code, see the spec).
        name: the preset this came from, for messages and records.
    """

    scales: tuple[Size, ...]
    crop_size: Size
    input_size: Size
    num_classes: int
    backbone: str
    n_refiners: int
    n_points: float
    n_patches: int = -1
    smooth_kernel: int = 5
    mode: str = "magnet"
    patch_order: str = "uncertain-first"
    name: str = "custom"
    #: n_patches used when a request switches a full-MagNet preset to ``magnet-fast``.
    fast_n_patches: int = field(default=4, compare=False)

    def __post_init__(self) -> None:
        # Normalise lists (from JSON or the command line) to tuples so the object stays hashable.
        object.__setattr__(self, "scales", tuple(_size(s, "scale") for s in self.scales))
        object.__setattr__(self, "crop_size", _size(self.crop_size, "crop_size"))
        object.__setattr__(self, "input_size", _size(self.input_size, "input_size"))
        _validate(self)

    # ------------------------------------------------------------------ derived values
    @property
    def num_scales(self) -> int:
        return len(self.scales)

    def refiner_index(self, scale_index: int) -> int:
        """Which refiner merges the prediction of scale ``scale_index`` (>= 1) into the running one."""
        return min(self.n_refiners, scale_index) - 1

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed; ``None`` values are ignored. Mode and n_patches stay coherent.

        Giving ``n_patches`` alone picks the mode it implies (-1 magnet, 0 downsample, k > 0 magnet-fast).
        Switching a full preset to ``magnet-fast`` without ``n_patches`` uses ``fast_n_patches``.
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise MagnetError(f"unknown setting(s) {sorted(unknown)}; known: {_field_names()}")
        mode = changes.get("mode")
        n_patches = changes.get("n_patches")
        if mode is None and n_patches is not None:
            changes["mode"] = _mode_for_n_patches(_int(n_patches, "n_patches"))
            if changes["mode"] == "downsample":
                changes["n_patches"] = self.n_patches if self.n_patches != 0 else -1
        elif mode == "magnet" and n_patches is None:
            changes["n_patches"] = -1
        elif mode == "magnet-fast" and n_patches is None and self.n_patches < 1:
            changes["n_patches"] = self.fast_n_patches
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; :func:`settings_from_dict` reads it back."""
        d = dataclasses.asdict(self)
        d["scales"] = [list(s) for s in self.scales]
        d["crop_size"] = list(self.crop_size)
        d["input_size"] = list(self.input_size)
        return d


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    """Inverse of :meth:`Settings.to_dict`, with a clear error for unknown or missing fields."""
    names = {f.name for f in dataclasses.fields(Settings)}
    unknown = set(data) - names
    if unknown:
        raise MagnetError(f"unknown setting(s) {sorted(unknown)}; known: {_field_names()}")
    try:
        return Settings(**dict(data))
    except TypeError as e:
        raise MagnetError(f"incomplete settings: {e}") from e


# ---------------------------------------------------------------------- validation
def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings)]


def _mode_for_n_patches(n_patches: int) -> str:
    if n_patches == -1:
        return "magnet"
    if n_patches == 0:
        return "downsample"
    return "magnet-fast"


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise MagnetError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def _size(value: Any, what: str) -> Size:
    try:
        w, h = value
    except (TypeError, ValueError):
        raise MagnetError(f"{what} must be a (width, height) pair, got {value!r}") from None
    w, h = _int(w, f"{what} width"), _int(h, f"{what} height")
    if w < 1 or h < 1:
        raise MagnetError(f"{what} must be positive, got {w}x{h}")
    return (w, h)


def _validate(s: Settings) -> None:
    if s.mode not in MODES:
        raise MagnetError(f"unknown mode {s.mode!r}; choose one of {list(MODES)}")
    if s.patch_order not in PATCH_ORDERS:
        raise MagnetError(f"unknown patch_order {s.patch_order!r}; choose one of {list(PATCH_ORDERS)}")
    if s.backbone not in BACKBONES:
        raise MagnetError(f"unknown backbone {s.backbone!r}; choose one of {list(BACKBONES)}")
    if not s.scales:
        raise MagnetError("scales is empty; give at least one (width, height)")
    num_classes = _int(s.num_classes, "num_classes")
    if not 2 <= num_classes <= MAX_CLASSES:
        raise MagnetError(
            f"num_classes must be in [2, {MAX_CLASSES}] (class maps are uint8), got {num_classes}"
        )
    cw, ch = s.crop_size
    first_w, first_h = s.scales[0]
    if cw > first_w or ch > first_h:
        raise MagnetError(f"crop_size {cw}x{ch} is larger than the first scale {first_w}x{first_h}")
    if (first_w, first_h) != (cw, ch):
        raise MagnetError(
            f"the first scale {first_w}x{first_h} is more than one patch: it must equal crop_size {cw}x{ch}, "
            "because the coarse pass sees the whole image as one patch"
        )
    for (pw, ph), (w, h) in zip(s.scales, s.scales[1:]):
        if w < pw or h < ph or (w, h) == (pw, ph):
            raise MagnetError(f"scales must grow coarse to fine, but {w}x{h} follows {pw}x{ph}")
    for w, h in s.scales:
        if cw > w or ch > h:
            raise MagnetError(f"crop_size {cw}x{ch} is larger than the scale {w}x{h}")
    n_refiners = _int(s.n_refiners, "n_refiners")
    transitions = max(1, s.num_scales - 1)
    if not 1 <= n_refiners <= transitions:
        raise MagnetError(
            f"n_refiners must be between 1 (shared) and {transitions} (one per scale transition), got {n_refiners}"
        )
    kernel = _int(s.smooth_kernel, "smooth_kernel")
    if kernel < 1 or kernel % 2 == 0:
        raise MagnetError(f"smooth_kernel must be a positive odd number, got {kernel}")
    if (
        isinstance(s.n_points, bool)
        or not isinstance(s.n_points, (int, float))
        or not math.isfinite(s.n_points)
    ):
        raise MagnetError(f"n_points must be a finite number, got {s.n_points!r}")
    if s.n_points <= 0:
        raise MagnetError(
            f"n_points must be > 0 (a count if > 1, else a fraction of the pixels), got {s.n_points}"
        )
    n_patches = _int(s.n_patches, "n_patches")
    if n_patches < -1:
        raise MagnetError(
            f"n_patches must be -1 (every patch), 0 (none) or a positive count, got {n_patches}"
        )
    if s.mode == "magnet" and n_patches != -1:
        raise MagnetError(
            f"mode 'magnet' refines every patch (n_patches -1); for n_patches={n_patches} "
            "use mode 'magnet-fast'"
        )
    if s.mode == "magnet-fast" and n_patches < 1:
        raise MagnetError(f"mode 'magnet-fast' needs n_patches >= 1, got {n_patches}")


# ---------------------------------------------------------------------- presets
_CITYSCAPES = Settings(
    name="cityscapes",
    scales=((256, 128), (512, 256), (1024, 512), (2048, 1024)),
    crop_size=(256, 128),
    input_size=(256, 128),
    num_classes=19,
    backbone="hrnet18+ocr",
    n_refiners=3,
    n_points=32768,
    n_patches=-1,
    smooth_kernel=5,
    fast_n_patches=4,
)
_DEEPGLOBE = Settings(
    name="deepglobe",
    scales=((612, 612), (1224, 1224), (2448, 2448)),
    crop_size=(612, 612),
    input_size=(508, 508),
    num_classes=7,
    backbone="fpn",
    n_refiners=1,
    n_points=0.75,
    n_patches=-1,
    smooth_kernel=11,
    fast_n_patches=3,
)
#: Inria Aerial (binary building masks over 5000 x 5000 tiles): the seed's table 3 gives the network
#: (ResNet-50 FPN), the tile and the input size (536 x 536); the rest is chosen, after DeepGlobe, the
#: other aerial preset: 625 x 625 crops (an eighth of the tile, so the scales double exactly from 625 to
#: 5000, four of them, and each crop shrinks to the input by 0.86, near DeepGlobe's 612 -> 508), one shared
#: refiner, 0.75 of each scale's pixels as points, an 11-pixel smoothing window. Each is a request option or
#: an export override (``--n-points``, ...).
_INRIA = Settings(
    name="inria",
    scales=((625, 625), (1250, 1250), (2500, 2500), (5000, 5000)),
    crop_size=(625, 625),
    input_size=(536, 536),
    num_classes=2,
    backbone="fpn",
    n_refiners=1,
    n_points=0.75,
    n_patches=-1,
    smooth_kernel=11,
    fast_n_patches=3,
)
#: Gleason pathology (4 classes, PSPNet on a ResNet-101, whose checkpoint layout is the reference key
#: list's ``psp``): the authors' published command crops 625 x 625 and feeds them at that size, with
#: scales from 625 to 5000 and an 11-pixel window. Chosen here: one shared refiner and 0.75 of the pixels
#: as points, as for DeepGlobe (the seed gives neither for Gleason).
_GLEASON = Settings(
    name="gleason",
    scales=((625, 625), (1250, 1250), (2500, 2500), (5000, 5000)),
    crop_size=(625, 625),
    input_size=(625, 625),
    num_classes=4,
    backbone="psp",
    n_refiners=1,
    n_points=0.75,
    n_patches=-1,
    smooth_kernel=11,
    fast_n_patches=3,
)
PRESETS: dict[str, Settings] = {
    "cityscapes": _CITYSCAPES,
    "cityscapes-fast": dataclasses.replace(
        _CITYSCAPES, name="cityscapes-fast", mode="magnet-fast", n_points=0.9, n_patches=4
    ),
    "deepglobe": _DEEPGLOBE,
    "deepglobe-fast": dataclasses.replace(
        _DEEPGLOBE, name="deepglobe-fast", mode="magnet-fast", n_points=0.9, n_patches=3
    ),
    "inria": _INRIA,
    "gleason": _GLEASON,
}


def get_preset(name: str, **overrides: Any) -> Settings:
    """The preset called ``name`` with ``overrides`` applied (``None`` values ignored)."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise MagnetError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
    return base.with_overrides(**overrides)
