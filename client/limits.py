"""What the served pipeline admits, read from its config (pure logic: the client fetches the config).

The pipeline's ``config.pbtxt`` states its pixel limit (``max_image_pixels``) and the preset it serves
(``settings``, JSON), so the client can cut a raster into windows the server takes before sending any,
and size their overlap from the preset's patch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from magnet_triton import io_spec
from magnet_triton.client.errors import ServerError

#: The overlap of neighbouring windows when the preset is unknown, in pixels.
FALLBACK_OVERLAP = 64
#: The pipeline's refusal of an image over its limit ("... over this server's limit of N ...").
_REFUSAL = re.compile(r"over this server's limit of (\d+)")


@dataclass(frozen=True)
class ServedLimits:
    """The served pipeline's limits.

    Attributes:
        max_image_pixels: the largest image (H x W) one request may carry.
        crop_size: the preset's patch (w, h) in pixels, None when the config does not say.
        stated: whether the config stated the limit (False: the pipeline's default was assumed).
    """

    max_image_pixels: int
    crop_size: tuple[int, int] | None = None
    stated: bool = True

    @property
    def default_overlap(self) -> int:
        """The overlap of tiled runs unless told: the preset's largest patch side, so that every kept
        pixel has at least half a patch of context on each side of a seam."""
        return max(self.crop_size) if self.crop_size else FALLBACK_OVERLAP


def limits_from_config(config: Mapping[str, Any]) -> ServedLimits:
    """:class:`ServedLimits` from the pipeline's ``get_model_config(as_json=True)`` answer."""
    config = config.get("config", config)
    parameters = config.get("parameters", {}) or {}

    def parameter(name: str) -> str | None:
        entry = parameters.get(name)
        return None if entry is None else str(entry.get("string_value", ""))

    text = parameter(io_spec.MAX_IMAGE_PIXELS_PARAMETER)
    try:
        limit = int(text) if text else io_spec.DEFAULT_MAX_IMAGE_PIXELS
    except ValueError:
        raise ServerError(
            f"the pipeline's config states {io_spec.MAX_IMAGE_PIXELS_PARAMETER} {text!r}, not a number"
        ) from None
    crop = None
    settings = parameter("settings")
    if settings:
        try:
            w, h = json.loads(settings)["crop_size"]
            crop = (int(w), int(h))
        except (ValueError, KeyError, TypeError):
            crop = None  # the overlap falls back; the limit, which matters more, is still known
    return ServedLimits(max_image_pixels=limit, crop_size=crop, stated=bool(text))


def limit_from_refusal(message: str) -> int | None:
    """The limit a pipeline's refusal of an over-limit image names, or None."""
    found = _REFUSAL.search(message)
    return int(found.group(1)) if found else None
