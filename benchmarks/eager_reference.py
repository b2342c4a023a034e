"""The baseline: MagNet in PyTorch eager, with the structure of the authors' code.

One patch at a time through the backbone and then the refiner, and ``torch.topk`` for the point
selection, as the published code does. The exact steps (resizes, patch cutting, ``roi_align``, paste,
error score, smoothing) are this package's own ops, so any speed difference against
:func:`magnet_triton.pipeline.run_magnet` comes from the structure, not from different arithmetic.

``torch.topk`` does not promise which of several tied values it keeps, while ``run_magnet`` keeps the
lowest indices (``magnet-spec.md`` step 13). The smoothed error map is full of ties, so the class maps
can differ in a few pixels; ``tie_break="lowest-index"`` swaps in the pipeline's top-k to show that
everything else is identical.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from magnet_triton.ops.geometry import patch_grid, patch_ratios, ratios_to_pixels, round_boxes
from magnet_triton.ops.patches import cut_patches
from magnet_triton.ops.refine import (
    error_score,
    margin,
    paste_average,
    point_count,
    replace_points,
    uncertainty,
    valid_mask,
)
from magnet_triton.ops.resize import resize_bilinear, resize_image
from magnet_triton.ops.roi_align import roi_align
from magnet_triton.ops.steps import TorchSteps
from magnet_triton.ops.topk import topk_lowest_index
from magnet_triton.pipeline import SegmentationResult, check_image, select_patches
from magnet_triton.settings import Settings

TIE_BREAKS = ("torch-topk", "lowest-index")


class EagerMagNet:
    """MagNet in eager PyTorch, one patch per network call.

    Args:
        backbone: B x 3 x h x w -> B x C x h x w logits (eval mode).
        refiners: one module per refiner, B x 2C x h x w -> B x C x h x w logits.
        tie_break: ``torch-topk`` (the authors' code) or ``lowest-index`` (the pipeline's rule).
        device: where the networks and the maps live; timings synchronise on a CUDA device.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        refiners: Sequence[torch.nn.Module],
        *,
        tie_break: str = "torch-topk",
        device: torch.device | str = "cpu",
    ) -> None:
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device).eval()
        self.refiners = [r.to(self.device).eval() for r in refiners]
        self.tie_break = tie_break
        self._steps = TorchSteps()
        self.timings: dict[str, float] = {}

    # -- the two networks, one patch per call ------------------------------------------------------
    def _timed(self, name: str, start: float) -> float:
        if self.device.type == "cuda":  # kernels run asynchronously: charge them to their own stage
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - start
        return now

    def _backbone_one(
        self, image: np.ndarray, box: tuple[int, int, int, int], settings: Settings
    ) -> torch.Tensor:
        t = time.perf_counter()
        patch = cut_patches(image, [box], settings.input_size).to(self.device)
        t = self._timed("prepare", t)
        probs = torch.softmax(self.backbone(patch), dim=1)
        self._timed("backbone", t)
        return probs

    def _refiner_one(self, index: int, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        refined = torch.softmax(self.refiners[index](torch.cat([fine, coarse], dim=1)), dim=1)
        self._timed("refiner", t)
        return refined

    def _topk(self, score: torch.Tensor, k: int) -> torch.Tensor:
        flat = score.reshape(-1)
        k = min(k, flat.numel())
        if self.tie_break == "lowest-index":
            return topk_lowest_index(flat, k)
        return torch.topk(flat, k).indices

    # -- the loop ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def __call__(self, image: np.ndarray, settings: Settings) -> SegmentationResult:
        """Segment one H x W x 3 uint8 RGB image; ``timings_s`` holds seconds per stage."""
        self.timings = {}
        image = check_image(image)
        out_hw = image.shape[:2]
        first = settings.scales[0]
        coarse = self._backbone_one(resize_image(image, first), (0, 0, *first), settings)
        points: list[int] = []
        if settings.mode == "downsample":
            probs = coarse
        elif settings.mode == "patching":
            probs = self._patching(image, settings)
        else:
            probs = coarse
            for scale_index in range(1, settings.num_scales):
                probs, n_replaced = self._refine_scale(image, settings, probs, scale_index)
                points.append(n_replaced)
        t = time.perf_counter()
        final = resize_bilinear(probs, out_hw)
        result = SegmentationResult(
            segmentation=final.argmax(dim=1)[0].to(torch.uint8).cpu().numpy(),
            coarse_segmentation=resize_bilinear(coarse, out_hw)
            .argmax(dim=1)[0]
            .to(torch.uint8)
            .cpu()
            .numpy(),
            confidence=margin(final)[0].cpu().numpy(),
            points_replaced=points,
        )
        self._timed("finish", t)
        result.timings_s = dict(self.timings)
        return result

    def _patching(self, image: np.ndarray, settings: Settings) -> torch.Tensor:
        size = settings.scales[-1]
        scaled = resize_image(image, size)
        fine = torch.cat(
            [self._backbone_one(scaled, box, settings) for box in patch_grid(size, settings.crop_size)]
        )
        t = time.perf_counter()
        pasted = paste_average(
            fine, round_boxes(patch_ratios(size, settings.crop_size), size), (size[1], size[0])
        )
        self._timed("paste", t)
        return pasted[None]

    def _refine_scale(
        self, image: np.ndarray, settings: Settings, probs: torch.Tensor, scale_index: int
    ) -> tuple[torch.Tensor, int]:
        size = settings.scales[scale_index]
        width, height = size
        in_w, in_h = settings.input_size
        fast = settings.mode == "magnet-fast"

        t = time.perf_counter()
        probs = resize_bilinear(probs, (height, width))
        ratios = patch_ratios(size, settings.crop_size)
        boxes = torch.from_numpy(ratios_to_pixels(ratios, size))
        uncert = uncertainty(probs)
        if fast:
            scores = torch.stack(
                [
                    roi_align(uncert[None, None], boxes[j : j + 1], (in_h, in_w)).mean()
                    for j in range(len(boxes))
                ]
            )
            selected = select_patches(scores, settings.n_patches, settings.patch_order)
        else:
            selected = list(range(len(ratios)))
        scaled = resize_image(image, size)
        grid = patch_grid(size, settings.crop_size)
        t = self._timed("uncertainty", t)

        refined = []
        index = settings.refiner_index(scale_index)
        for j in selected:  # the authors' structure: each patch through both networks before the next
            fine = self._backbone_one(scaled, grid[j], settings)
            t = time.perf_counter()
            coarse_crop = roi_align(probs, boxes[j : j + 1], (in_h, in_w))
            self._timed("roi_align", t)
            refined.append(self._refiner_one(index, fine, coarse_crop))

        t = time.perf_counter()
        rounded = round_boxes(ratios[selected], size)
        pasted = paste_average(torch.cat(refined), rounded, (height, width))
        mask = valid_mask(rounded, (height, width), self.device) if fast else None
        zero_where = None
        if mask is not None:
            zero_where = mask if settings.patch_order == "official" else ~mask
        score = error_score(pasted, uncert, zero_where)
        score = self._steps.smooth(score, (in_h, in_w), settings.smooth_kernel)
        k = point_count(settings.n_points, size, len(selected), len(ratios))
        indices = self._topk(score, k)
        if mask is not None:
            indices = indices[mask.reshape(-1)[indices]]
        replace_points(probs, pasted, indices)
        self._timed("refine", t)
        return probs, int(indices.numel())
