"""The per-scale uncertainty steps as one swappable object.

The pipeline calls these five operations through a :class:`RefinementSteps`. :class:`TorchSteps` is the
PyTorch version (the "CPU twins"); ``magnet_triton.kernels`` provides a CUDA version with identical
results, and :func:`steps_for_device` picks one.
"""

from __future__ import annotations

import logging
from typing import Protocol

import torch

from magnet_triton.ops.median import median_filter
from magnet_triton.ops.refine import error_score, replace_points, uncertainty
from magnet_triton.ops.resize import resize_nearest
from magnet_triton.ops.topk import topk_lowest_index

log = logging.getLogger(__name__)


class RefinementSteps(Protocol):
    def uncertainty(self, probs: torch.Tensor) -> torch.Tensor:
        """1 x C x H x W probabilities -> H x W ``1 - margin``."""
        ...

    def error_score(
        self, refined: torch.Tensor, uncert: torch.Tensor, zero_where: torch.Tensor | None
    ) -> torch.Tensor:
        """C x H x W refined probabilities, H x W uncertainty -> H x W error score."""
        ...

    def smooth(self, score: torch.Tensor, small_hw: tuple[int, int], kernel: int) -> torch.Tensor:
        """H x W -> nearest to ``small_hw`` -> k x k median -> nearest back to H x W."""
        ...

    def smoothed_error_score(
        self,
        refined: torch.Tensor,
        uncert: torch.Tensor,
        zero_where: torch.Tensor | None,
        small_hw: tuple[int, int],
        kernel: int,
    ) -> torch.Tensor:
        """``smooth(error_score(...))``; the CUDA version never writes the full-size score map."""
        ...

    def topk(self, values: torch.Tensor, k: int) -> torch.Tensor:
        """Flat int64 indices of the k largest values, lowest index first among ties (any order)."""
        ...

    def replace(self, probs: torch.Tensor, refined: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Copy every channel of ``refined`` into ``probs`` (1 x C x H x W) at ``indices``, in place."""
        ...


class TorchSteps:
    """The steps written with PyTorch operations; the reference for every other implementation."""

    name = "torch"

    def uncertainty(self, probs: torch.Tensor) -> torch.Tensor:
        return uncertainty(probs)

    def error_score(
        self, refined: torch.Tensor, uncert: torch.Tensor, zero_where: torch.Tensor | None
    ) -> torch.Tensor:
        return error_score(refined, uncert, zero_where)

    def smooth(self, score: torch.Tensor, small_hw: tuple[int, int], kernel: int) -> torch.Tensor:
        small = resize_nearest(score, small_hw)
        return resize_nearest(median_filter(small, kernel), tuple(score.shape[-2:]))

    def smoothed_error_score(
        self,
        refined: torch.Tensor,
        uncert: torch.Tensor,
        zero_where: torch.Tensor | None,
        small_hw: tuple[int, int],
        kernel: int,
    ) -> torch.Tensor:
        return self.smooth(self.error_score(refined, uncert, zero_where), small_hw, kernel)

    def topk(self, values: torch.Tensor, k: int) -> torch.Tensor:
        return topk_lowest_index(values, k)

    def replace(self, probs: torch.Tensor, refined: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return replace_points(probs, refined, indices)


def steps_for_device(
    device: torch.device | str, *, prefer_kernels: bool = True, kernel_dir: str | None = None
) -> RefinementSteps:
    """The CUDA kernels on a CUDA device when they load (from ``kernel_dir`` first), else the PyTorch steps."""
    device = torch.device(device)
    if device.type == "cuda" and prefer_kernels:
        try:
            from magnet_triton.kernels import cuda_steps

            return cuda_steps(device, kernel_dir=kernel_dir)
        except Exception as e:  # no pycuda, no compiled kernels, no driver: the twins still work
            log.warning("CUDA kernels unavailable (%s); using the PyTorch steps on %s", e, device)
    return TorchSteps()
