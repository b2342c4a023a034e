"""The segmentation networks of MagNet (backbones and refiner), in the authors' checkpoint layout.

``build_network(name, num_classes)`` makes any of them; every network maps B x Cin x h x w float32 to
B x C x h x w logits at the input resolution. torch is imported lazily, by the builders, so importing
this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magnet_triton.errors import MagnetError

if TYPE_CHECKING:
    from torch import nn

#: Every name ``build_network`` accepts.
NETWORK_NAMES: tuple[str, ...] = ("refinement", "hrnet18+ocr", "hrnet48+ocr", "fpn", "psp")


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
    if name not in NETWORK_NAMES:
        raise MagnetError(f"unknown network {name!r}; valid names are: {', '.join(NETWORK_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise MagnetError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if name == "refinement":
        from magnet_triton.networks.refiner import RefinementMagNet

        return RefinementMagNet(num_classes)
    if name in ("hrnet18+ocr", "hrnet48+ocr"):
        from magnet_triton.networks.ocr import HRNetOCR

        return HRNetOCR(num_classes, width=18 if name == "hrnet18+ocr" else 48)
    if name == "fpn":
        from magnet_triton.networks.fpn import ResNetFPN

        return ResNetFPN(num_classes)
    from magnet_triton.networks.psp import PSPNet

    return PSPNet(num_classes)


_CHECKPOINT_API = ("load_checkpoint", "random_state_dict", "save_checkpoint")


def __getattr__(name: str) -> object:
    # The checkpoint helpers import torch; resolve them on first use so this package stays light.
    if name in _CHECKPOINT_API:
        from magnet_triton.networks import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["NETWORK_NAMES", "build_network", "load_checkpoint", "random_state_dict", "save_checkpoint"]
