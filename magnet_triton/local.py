"""MagNet in this process: PyTorch networks behind the pipeline's :class:`~magnet_triton.pipeline.Networks`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from magnet_triton.settings import Settings

if TYPE_CHECKING:
    from magnet_triton.networks.weights import WeightSet

log = logging.getLogger(__name__)


class TorchNetworks:
    """The backbone and refiners as PyTorch modules, returning probabilities.

    Patches are run in batches of at most ``max_batch`` (the pipeline hands over a whole scale at once).
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        refiners: Sequence[torch.nn.Module],
        *,
        device: torch.device | str = "cpu",
        max_batch: int = 8,
    ) -> None:
        self.device = torch.device(device)
        self.backbone_module = backbone.to(self.device).eval()
        self.refiner_modules = [r.to(self.device).eval() for r in refiners]
        self.max_batch = max_batch

    @torch.inference_mode()
    def _run(self, module: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        inputs = inputs.to(self.device)
        outputs = [torch.softmax(module(chunk), dim=1) for chunk in inputs.split(self.max_batch)]
        return torch.cat(outputs)

    def backbone(self, patches: torch.Tensor) -> torch.Tensor:
        """B x 3 x h x w float32 -> B x C x h x w float32 probabilities."""
        return self._run(self.backbone_module, patches)

    def refiner(self, index: int, fine_and_coarse: torch.Tensor) -> torch.Tensor:
        """B x 2C x h x w float32 -> B x C x h x w float32 probabilities, with refiner ``index``."""
        return self._run(self.refiner_modules[index], fine_and_coarse)


def load_networks(
    settings: Settings,
    backbone_path: str | os.PathLike | None,
    refiner_paths: Sequence[str | os.PathLike],
    *,
    random_seed: int | None = None,
    device: torch.device | str = "cpu",
    max_batch: int = 8,
) -> TorchNetworks:
    """Build the preset's networks and load the authors' checkpoints strictly (or seeded random weights).

    The weights are named as :func:`~magnet_triton.networks.weights.weight_set` takes them: a network
    without a checkpoint gets seeded random weights when ``random_seed`` is given.
    """
    from magnet_triton.networks.weights import weight_set

    return torch_networks(
        settings,
        weight_set(settings, backbone_path, refiner_paths, random_seed),
        device=device,
        max_batch=max_batch,
    )


def torch_networks(
    settings: Settings, weights: WeightSet, *, device: torch.device | str = "cpu", max_batch: int = 8
) -> TorchNetworks:
    """:class:`TorchNetworks` of ``settings`` with ``weights`` (say, read back from a repository)."""
    from magnet_triton.networks.weights import build_networks

    if weights.random:
        log.warning("using seeded random weights: the class maps mean nothing")
    backbone, refiners = build_networks(settings, weights)
    return TorchNetworks(backbone, refiners, device=device, max_batch=max_batch)
