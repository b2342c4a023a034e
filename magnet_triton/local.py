"""MagNet in this process: PyTorch networks behind the pipeline's :class:`~magnet_triton.pipeline.Networks`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from magnet_triton.errors import MagnetError
from magnet_triton.settings import Settings

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


def expand_refiner_paths(paths: Sequence[str | os.PathLike], n_refiners: int) -> list[Path]:
    """One refiner file per scale transition, or one shared file used for all of them."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        return paths * n_refiners
    if len(paths) != n_refiners:
        raise MagnetError(
            f"got {len(paths)} refiner files, but the settings use {n_refiners} refiners: "
            f"give one file per scale transition ({n_refiners}) or one shared file"
        )
    return paths


def load_networks(
    settings: Settings,
    backbone_path: str | os.PathLike | None,
    refiner_paths: Sequence[str | os.PathLike],
    *,
    random_seed: int | None = None,
    device: torch.device | str = "cpu",
    max_batch: int = 8,
) -> TorchNetworks:
    """Build the preset's networks and load the authors' checkpoints strictly (or seeded random weights)."""
    from magnet_triton.networks import build_network
    from magnet_triton.networks.checkpoint import load_checkpoint, random_state_dict

    backbone = build_network(settings.backbone, settings.num_classes)
    refiners = [build_network("refinement", settings.num_classes) for _ in range(settings.n_refiners)]
    if random_seed is not None:
        log.warning("using seeded random weights (seed %d): the class maps mean nothing", random_seed)
        backbone.load_state_dict(random_state_dict(settings.backbone, settings.num_classes, random_seed))
        for index, refiner in enumerate(refiners):
            refiner.load_state_dict(
                random_state_dict("refinement", settings.num_classes, random_seed + 1 + index)
            )
    else:
        if backbone_path is None or not refiner_paths:
            raise MagnetError("give --backbone and --refiner checkpoints, or --random-weights SEED")
        load_checkpoint(backbone, backbone_path)
        for refiner, path in zip(refiners, expand_refiner_paths(refiner_paths, settings.n_refiners)):
            load_checkpoint(refiner, path)
    return TorchNetworks(backbone, refiners, device=device, max_batch=max_batch)
