"""Per-request overrides of the preset, checked before any work starts (pure logic, no Triton).

A request may carry ``MODE``, ``N_POINTS``, ``N_PATCHES`` and ``PATCH_ORDER`` as optional inputs, or the
same names (lower case) as request parameters. Anything odd (NaN, negative, absurd, unknown names)
becomes a :class:`MagnetError` whose message goes back to the caller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from magnet_triton.errors import MagnetError
from magnet_triton.settings import MODES, PATCH_ORDERS, Settings

#: Upper bound on ``n_points`` as a count: more than any served image has pixels is a mistake.
MAX_N_POINTS = 1 << 31
#: Upper bound on ``n_patches``: no preset has more than a few hundred patches per scale.
MAX_N_PATCHES = 1 << 16

OVERRIDE_INPUTS = {
    "MODE": "mode",
    "N_POINTS": "n_points",
    "N_PATCHES": "n_patches",
    "PATCH_ORDER": "patch_order",
}


def _scalar(name: str, value: Any) -> Any:
    """The single element of a 1-element input (or a plain parameter value)."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise MagnetError(f"{name} must hold exactly one value, got shape {tuple(value.shape)}")
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise MagnetError(f"{name} is not UTF-8 text") from None
    if isinstance(value, np.generic):
        value = value.item()
    return value


def parse_overrides(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate raw override values (keyed by input name or lower-case parameter name).

    Returns keyword arguments for :meth:`Settings.with_overrides`.
    """
    overrides: dict[str, Any] = {}
    for key, value in raw.items():
        field = OVERRIDE_INPUTS.get(key.upper())
        if field is None:
            raise MagnetError(f"unknown override {key!r}; known: {sorted(OVERRIDE_INPUTS)}")
        if value is None:
            continue
        value = _scalar(key, value)
        if field == "mode":
            if value not in MODES:
                raise MagnetError(f"unknown mode {value!r}; choose one of {list(MODES)}")
        elif field == "patch_order":
            if value not in PATCH_ORDERS:
                raise MagnetError(f"unknown patch_order {value!r}; choose one of {list(PATCH_ORDERS)}")
        elif field == "n_points":
            if isinstance(value, (str, bool)) or not isinstance(value, (int, float)):
                raise MagnetError(f"n_points must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value) or value <= 0 or value > MAX_N_POINTS:
                raise MagnetError(
                    f"n_points must be in (0, 1] (a fraction) or a count up to {MAX_N_POINTS}, got {value}"
                )
        elif field == "n_patches":
            if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
                raise MagnetError(f"n_patches must be a whole number, got {value}")
            if isinstance(value, (str, bool)) or not isinstance(value, (int, float)):
                raise MagnetError(f"n_patches must be a whole number, got {value!r}")
            value = int(value)
            if value < -1 or value > MAX_N_PATCHES:
                raise MagnetError(
                    f"n_patches must be -1 (every patch), 0 (coarse only) or 1..{MAX_N_PATCHES}, got {value}"
                )
        overrides[field] = value
    return overrides


def apply_overrides(settings: Settings, raw: Mapping[str, Any]) -> Settings:
    """``settings`` with the request's overrides, or a :class:`MagnetError` saying what is wrong."""
    return settings.with_overrides(**parse_overrides(raw))
