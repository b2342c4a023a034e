"""The segmentation networks of MagNet (backbones and refiner), in the authors' checkpoint layout.

``build_network(name, num_classes)`` makes any network of the registry
(:mod:`magnet_triton.networks.registry`); every network maps B x Cin x h x w float32 to B x C x h x w
logits at the input resolution. torch is imported lazily, by the builders, so importing this package
stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magnet_triton.errors import MagnetError
from magnet_triton.lazy import lazy_attributes
from magnet_triton.networks.registry import BACKBONES, NETWORK_NAMES, NETWORKS, network_entry

if TYPE_CHECKING:
    from torch import nn


def build_network(name: str, num_classes: int) -> nn.Module:
    """Build a freshly initialised network (training mode, as ``nn.Module`` constructors leave it).

    Args:
        name: one of ``NETWORK_NAMES``.
        num_classes: C >= 1. The refiner then takes 2C input channels, the backbones 3 (RGB).

    Returns:
        The module; its ``state_dict`` has the authors' key names and shapes.

    Raises:
        MagnetError: unknown name or a class count below 1.
    """
    entry = network_entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise MagnetError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return entry.build(num_classes)


# The helpers below import torch; resolve them on first use so this package stays light.
__getattr__ = lazy_attributes(
    __name__,
    {
        "load_checkpoint": "magnet_triton.networks.checkpoint",
        "random_state_dict": "magnet_triton.networks.checkpoint",
        "save_checkpoint": "magnet_triton.networks.checkpoint",
        "network_with_weights": "magnet_triton.networks.weights",
    },
)


__all__ = [
    "BACKBONES",
    "NETWORKS",
    "NETWORK_NAMES",
    "build_network",
    "load_checkpoint",
    "network_entry",
    "network_with_weights",
    "random_state_dict",
    "save_checkpoint",
]
