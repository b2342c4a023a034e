"""The network registry: one entry per network MagNet can run, and every list of networks derives from it.

An entry says how to build the network, what its input is (an RGB image normalised one way, or the
refiner's fine and coarse probabilities), which layers are its classifier, which layers must stay in
FP32 in a reduced-precision engine, and how the authors' checkpoints of it are laid out. Adding a
backbone is one :class:`NetworkEntry` in :data:`NETWORKS` (plus the network's own module and tests).

Only the standard library and numpy are imported here: settings, the client and ``--help`` read this
table on machines without torch. The builders are imported when a network is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from magnet_triton.errors import MagnetError

if TYPE_CHECKING:
    from torch import nn

BACKBONE = "backbone"
REFINER = "refiner"
ROLES = (BACKBONE, REFINER)


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(pixel / 255 - mean) / std`` applied to RGB patches before a backbone sees them.

    Attributes:
        mean, std: three float32 values, R, G, B.
        name: where the values come from, for messages and records.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str = "custom"

    @property
    def mean_array(self) -> np.ndarray:
        """(3,) float32."""
        return np.array(self.mean, dtype=np.float32)

    @property
    def std_array(self) -> np.ndarray:
        """(3,) float32."""
        return np.array(self.std, dtype=np.float32)


#: The ImageNet statistics every published MagNet backbone was trained with.
IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), name="imagenet")

#: TensorRT layer patterns kept in FP32 in every network (see ``export.tensorrt_build.select_fp32_layers``
#: for the syntax): the softmax at the end saturates in half precision and reorders close classes, and
#: matrix products summing thousands of terms lose the class ranking. Both are a negligible share of time.
_SOFTMAX_AND_MATMUL = ("type:SOFTMAX", "type:MATRIX_MULTIPLY")


@dataclass(frozen=True)
class NetworkEntry:
    """Everything the bundle knows about one network.

    Attributes:
        name: the name settings, checkpoints and the command line use (``hrnet18+ocr``).
        role: :data:`BACKBONE` (RGB patches in) or :data:`REFINER` (fine + coarse probabilities in).
        builder: ``module:Class`` of the ``nn.Module``; called as ``Class(num_classes, **builder_kwargs)``.
        builder_kwargs: extra constructor arguments (the HRNet width, say).
        classifier_layers: submodules that produce class scores; seeded random weights centre them.
        fp32_layers: TensorRT patterns of the layers kept in FP32 in FP16 engines.
        fp32_modules: regular expressions searched in the qualified names of the ``nn.Module`` s that the
            ``torch`` engine keeps in FP32 when it runs in FP16 (its final softmax always is).
        normalization: how RGB patches are normalised for a backbone; None for the refiner.
        checkpoint_prefix: a prefix the authors' training code puts on every key (stripped when present
            on all of them).
        description: one line for ``--help`` and the docs.
    """

    name: str
    role: str
    builder: str
    classifier_layers: tuple[str, ...]
    description: str
    builder_kwargs: Mapping[str, Any] = field(default_factory=dict)
    fp32_layers: tuple[str, ...] = _SOFTMAX_AND_MATMUL
    fp32_modules: tuple[str, ...] = ()
    normalization: Normalization | None = IMAGENET
    checkpoint_prefix: str = "model."

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise MagnetError(f"network {self.name}: role must be one of {ROLES}, got {self.role!r}")
        if self.role == BACKBONE and self.normalization is None:
            raise MagnetError(f"backbone {self.name} needs the normalisation of its RGB input")
        if self.role == REFINER and self.normalization is not None:
            raise MagnetError(f"refiner {self.name} takes probabilities, which are not normalised")
        object.__setattr__(self, "builder_kwargs", MappingProxyType(dict(self.builder_kwargs)))

    def input_channels(self, num_classes: int) -> int:
        """3 (RGB) for a backbone, 2C (fine then coarse probabilities) for the refiner."""
        return 3 if self.role == BACKBONE else 2 * int(num_classes)

    def build(self, num_classes: int) -> nn.Module:
        """A freshly initialised module (training mode, as constructors leave it)."""
        module_name, class_name = self.builder.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(num_classes, **self.builder_kwargs)


def _hrnet_ocr(width: int) -> NetworkEntry:
    """HRNetV2-W``width`` with OCR: the two published widths differ only in the width."""
    return NetworkEntry(
        name=f"hrnet{width}+ocr",
        role=BACKBONE,
        builder="magnet_triton.networks.ocr:HRNetOCR",
        builder_kwargs={"width": width},
        classifier_layers=("cls_head", "aux_head.3"),
        # The OCR attention sums 256-wide dot products over every pixel of the patch.
        fp32_layers=(*_SOFTMAX_AND_MATMUL, r"object_context_block/(MatMul|Mul|Softmax)"),
        fp32_modules=(r"(^|\.)object_context_block$",),
        description=f"HRNetV2-W{width} with object-contextual representations (Cityscapes)",
    )


#: Every network, by name. The refiner comes first; the backbones follow in the order ``--help`` lists them.
NETWORKS: Mapping[str, NetworkEntry] = MappingProxyType(
    {
        entry.name: entry
        for entry in (
            NetworkEntry(
                name="refinement",
                role=REFINER,
                builder="magnet_triton.networks.refiner:RefinementMagNet",
                classifier_layers=("seg_conv",),
                normalization=None,
                description="MagNet's refiner: merges a fine and a coarse prediction",
            ),
            _hrnet_ocr(18),
            _hrnet_ocr(48),
            NetworkEntry(
                name="fpn",
                role=BACKBONE,
                builder="magnet_triton.networks.fpn:ResNetFPN",
                classifier_layers=("classify",),
                description="ResNet-50 feature pyramid network (DeepGlobe)",
            ),
            NetworkEntry(
                name="psp",
                role=BACKBONE,
                builder="magnet_triton.networks.psp:PSPNet",
                classifier_layers=("final", "classifier"),
                description="PSPNet on a ResNet-101 (output stride 32)",
            ),
        )
    }
)

#: The names ``build_network`` accepts, and the backbones a preset may name.
NETWORK_NAMES: tuple[str, ...] = tuple(NETWORKS)
BACKBONES: tuple[str, ...] = tuple(n for n, e in NETWORKS.items() if e.role == BACKBONE)
#: The one refiner network (MagNet has one architecture; a checkpoint set has one file per transition).
REFINER_NETWORK: str = next(n for n, e in NETWORKS.items() if e.role == REFINER)


def network_entry(name: str) -> NetworkEntry:
    """The registry entry of network ``name``, or a MagnetError listing the valid names."""
    try:
        return NETWORKS[name]
    except KeyError:
        raise MagnetError(f"unknown network {name!r}; valid names are: {', '.join(NETWORK_NAMES)}") from None
