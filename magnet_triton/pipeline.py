"""The reference MagNet pipeline: ``magnet-spec.md`` step by step, on tensors of any device.

The networks are reached through :class:`Networks`, so the same code runs in-process (PyTorch modules,
:mod:`magnet_triton.local`) and inside Triton's ``magnet_pipeline`` model (BLS calls). The five
per-pixel uncertainty steps go through a :class:`~magnet_triton.ops.steps.RefinementSteps`, so CUDA
kernels can replace the PyTorch versions on a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from magnet_triton.errors import MagnetError, WorkStopped
from magnet_triton.networks.registry import Normalization, network_entry
from magnet_triton.ops.geometry import patch_grid, patch_ratios, ratios_to_pixels, round_boxes
from magnet_triton.ops.patches import cut_patches
from magnet_triton.ops.refine import paste_average, point_count, valid_mask, winner_and_margin
from magnet_triton.ops.resize import resize_bilinear, resize_image
from magnet_triton.ops.roi_align import roi_align
from magnet_triton.ops.steps import RefinementSteps, steps_for_device
from magnet_triton.settings import Settings


class Networks(Protocol):
    """The two networks, returning probabilities (softmax over classes)."""

    def backbone(self, patches: torch.Tensor) -> torch.Tensor:
        """B x 3 x h x w normalised float32 patches -> B x C x h x w float32 probabilities."""
        ...

    def refiner(self, index: int, fine_and_coarse: torch.Tensor) -> torch.Tensor:
        """B x 2C x h x w (fine probabilities, then coarse) -> B x C x h x w probabilities."""
        ...


@dataclass
class SegmentationResult:
    """What one image gives.

    Attributes:
        segmentation: H0 x W0 uint8 class map.
        coarse_segmentation: H0 x W0 uint8 class map of the coarse (step 0) prediction; None when not
            asked for.
        confidence: H0 x W0 float32, top-1 minus top-2 of the final probabilities; None when not asked
            for.
        probabilities: 1 x C x H0 x W0 float32 final probabilities, when asked for.
        timings_s: seconds spent per stage.
        points_replaced: per refined scale, how many pixels took the refiner's answer.
        patches_refined: per refined scale, how many patches went through the backbone and refiner.
        scales_done: the scales the map went through, the coarse pass included: the preset's
            ``num_scales`` unless ``out_of_time`` stopped the refinement early (1 for downsample).
    """

    segmentation: np.ndarray
    coarse_segmentation: np.ndarray | None
    confidence: np.ndarray | None
    probabilities: torch.Tensor | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    points_replaced: list[int] = field(default_factory=list)
    patches_refined: list[int] = field(default_factory=list)
    scales_done: int = 0


def check_image(image: np.ndarray) -> np.ndarray:
    """The image as a contiguous H x W x 3 uint8 array, or a :class:`MagnetError` saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise MagnetError(f"the image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise MagnetError(f"the image must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise MagnetError(f"the image must be H x W x 3 (RGB), got shape {tuple(image.shape)}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise MagnetError(f"the image is empty: shape {tuple(image.shape)}")
    return np.ascontiguousarray(image)


def select_patches(scores: torch.Tensor, n_patches: int, patch_order: str) -> list[int]:
    """Indices of the patches to refine, in increasing order (step 5).

    ``uncertain-first`` keeps the ``n_patches`` highest scores (the paper); ``official`` keeps the lowest,
    as the authors' code does. Ties go to the lower index either way (stable sorts).
    """
    n_patches = min(n_patches, scores.numel())
    descending = patch_order == "uncertain-first"
    order = torch.sort(scores.cpu(), descending=descending, stable=True).indices
    return sorted(order[:n_patches].tolist())


class _Clock:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.timings: dict[str, float] = {}

    def lap(self, name: str, start: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - start
        return now


def run_magnet(
    image: np.ndarray,
    settings: Settings,
    networks: Networks,
    *,
    device: torch.device | str = "cpu",
    steps: RefinementSteps | None = None,
    return_probabilities: bool = False,
    return_coarse: bool = True,
    return_confidence: bool = True,
    cut_on_device: bool | None = None,
    should_stop: Callable[[], bool] | None = None,
    out_of_time: Callable[[], bool] | None = None,
    on_stage: Callable[[int, np.ndarray], None] | None = None,
) -> SegmentationResult:
    """Segment one H x W x 3 uint8 RGB image with MagNet as ``settings`` say (every mode).

    ``cut_on_device``: resize the image and cut its patches on ``device`` (default: on a CUDA device)
    rather than with OpenCV on the CPU; both compute the same pixels.

    ``device`` is where the maps live; the networks get their inputs there. ``steps`` defaults to the
    CUDA kernels on a CUDA device and the PyTorch steps elsewhere. The coarse map and the confidence are
    full-resolution passes over C x H x W maps (about 0.1 to 0.4 s each at 2048x1024 on one CPU core), so
    callers that do not need them say so.

    ``should_stop`` is asked before the coarse pass and before each refined scale (a served request:
    "has the caller cancelled?"); when it says yes the run ends there with :class:`WorkStopped`, so an
    abandoned request costs at most one more scale.

    ``out_of_time`` is asked before each refined scale (a served request's ``deadline_ms``); when it says
    yes the refinement ends there and the map refined so far is returned (the coarse pass is always
    run: it is one patch), with ``scales_done`` saying how far it got. MagNet is progressive, so a
    deadline buys a coarser answer instead of none.

    ``on_stage(scales_done, class_map)`` gets the H0 x W0 uint8 class map after the coarse pass and after
    each refined scale but the last (whose map is the result's): a progressive answer. Each costs one
    more full-resolution pass.
    """
    image = check_image(image)
    device = torch.device(device)
    steps = steps or steps_for_device(device)
    clock = _Clock(device)
    out_hw = image.shape[:2]
    if cut_on_device if cut_on_device is not None else device.type == "cuda":
        # One copy of the image to the device; every scale and patch is then cut there.
        image = torch.from_numpy(image).to(device)

    def check_stop(done: int) -> None:
        if should_stop is not None and should_stop():
            raise WorkStopped(
                f"stopped after {done} of {settings.num_scales} scales: the request was cancelled"
            )

    check_stop(0)
    t = time.perf_counter()
    first = settings.scales[0]
    coarse_patch = cut_patches(
        resize_image(image, first), [(0, 0, *first)], settings.input_size, _normalization(settings)
    )
    t = clock.lap("prepare", t)
    coarse = networks.backbone(coarse_patch.to(device))
    t = clock.lap("backbone", t)
    points: list[int] = []
    patches: list[int] = []
    scales_done = 1

    def stage(probs: torch.Tensor) -> None:
        if on_stage is not None and scales_done < settings.num_scales:
            t = time.perf_counter()
            winner = resize_bilinear(probs, out_hw).max(dim=1).indices
            on_stage(scales_done, winner[0].to(torch.uint8).cpu().numpy())
            clock.lap("stages", t)

    if settings.mode == "downsample":
        probs = coarse
    elif settings.mode == "patching":
        check_stop(1)
        probs = _patching(image, settings, networks, device, clock)
        scales_done = settings.num_scales
    else:
        probs = coarse
        stage(probs)
        for scale_index in range(1, settings.num_scales):
            check_stop(scale_index)
            if out_of_time is not None and out_of_time():
                break
            probs, n_replaced, n_patches = _refine_scale(
                image, settings, networks, probs, scale_index, steps, clock
            )
            points.append(n_replaced)
            patches.append(n_patches)
            scales_done = scale_index + 1
            stage(probs)

    t = time.perf_counter()
    final = resize_bilinear(probs, out_hw)
    confidence = None
    if return_confidence:
        winner, top_margin = winner_and_margin(final)
        confidence = top_margin[0].float().cpu().numpy()
    else:
        winner = final.max(dim=1).indices  # max's index: argmax's answer at a third of its CPU cost
    segmentation = winner[0].to(torch.uint8).cpu().numpy()
    coarse_map = None
    if return_coarse:
        coarse_map = resize_bilinear(coarse, out_hw).max(dim=1).indices[0].to(torch.uint8).cpu().numpy()
    clock.lap("finish", t)
    return SegmentationResult(
        segmentation=segmentation,
        coarse_segmentation=coarse_map,
        confidence=confidence,
        probabilities=final.cpu() if return_probabilities else None,
        timings_s=clock.timings,
        points_replaced=points,
        patches_refined=patches,
        scales_done=scales_done,
    )


def _normalization(settings: Settings) -> Normalization:
    normalization = network_entry(settings.backbone).normalization
    assert normalization is not None  # the registry requires one of every backbone
    return normalization


def _patching(
    image: np.ndarray | torch.Tensor,
    settings: Settings,
    networks: Networks,
    device: torch.device,
    clock: _Clock,
) -> torch.Tensor:
    """The Patching baseline: the backbone on every patch of the last scale, pasted, no refiner."""
    t = time.perf_counter()
    size = settings.scales[-1]
    patches = cut_patches(
        resize_image(image, size),
        patch_grid(size, settings.crop_size),
        settings.input_size,
        _normalization(settings),
    )
    t = clock.lap("prepare", t)
    fine = networks.backbone(patches.to(device))
    t = clock.lap("backbone", t)
    boxes = round_boxes(patch_ratios(size, settings.crop_size), size)
    pasted = paste_average(fine, boxes, (size[1], size[0]))[None]
    clock.lap("paste", t)
    return pasted


def _refine_scale(
    image: np.ndarray | torch.Tensor,
    settings: Settings,
    networks: Networks,
    probs: torch.Tensor,
    scale_index: int,
    steps: RefinementSteps,
    clock: _Clock,
) -> tuple[torch.Tensor, int, int]:
    """Steps 1-15 for one scale: the updated 1 x C x H x W probabilities, the points replaced and the
    patches refined."""
    size = settings.scales[scale_index]
    width, height = size
    in_w, in_h = settings.input_size
    fast = settings.mode == "magnet-fast"

    t = time.perf_counter()
    probs = resize_bilinear(probs, (height, width))  # step 1
    ratios = patch_ratios(size, settings.crop_size)
    boxes = torch.from_numpy(ratios_to_pixels(ratios, size))  # step 2: float pixel boxes
    uncert = steps.uncertainty(probs)  # step 3
    n_all = len(ratios)
    if fast:  # steps 4-5
        scores = roi_align(uncert[None, None], boxes, (in_h, in_w)).mean(dim=(1, 2, 3))
        selected = select_patches(scores, settings.n_patches, settings.patch_order)
    else:
        selected = list(range(n_all))
    t = clock.lap("uncertainty", t)

    grid = patch_grid(size, settings.crop_size)
    crops = [grid[j] for j in selected]
    patches = cut_patches(resize_image(image, size), crops, settings.input_size, _normalization(settings))
    t = clock.lap("prepare", t)
    fine = networks.backbone(patches.to(probs.device))  # step 6
    t = clock.lap("backbone", t)
    coarse_crops = roi_align(probs, boxes[selected], (in_h, in_w))  # step 7
    t = clock.lap("roi_align", t)
    refined = networks.refiner(settings.refiner_index(scale_index), torch.cat([fine, coarse_crops], dim=1))
    t = clock.lap("refiner", t)

    rounded = round_boxes(ratios[selected], size)  # step 9
    pasted = paste_average(refined, rounded, (height, width))
    mask = valid_mask(rounded, (height, width), probs.device) if fast else None
    zero_where = None
    if mask is not None:
        # Ours zeroes the score outside the refined boxes; the authors' code zeroes it inside (see spec).
        zero_where = mask if settings.patch_order == "official" else ~mask
    score = steps.smoothed_error_score(
        pasted, uncert, zero_where, (in_h, in_w), settings.smooth_kernel
    )  # 10-11
    k = point_count(settings.n_points, size, len(selected), n_all)  # step 12
    indices = steps.topk(score.reshape(-1), k)  # step 13
    if mask is not None:  # step 14
        indices = indices[mask.reshape(-1)[indices]]
    steps.replace(probs, pasted, indices)  # step 15
    clock.lap("refine", t)
    return probs, int(indices.numel()), len(selected)


def request_work(settings: Settings) -> tuple[int, int]:
    """(patches, points) a run with ``settings`` refines at most, whatever the image: the patches of every
    refined scale (or the ``n_patches`` most uncertain of each) and the points replaced per scale.

    The scales are fixed by the preset, so this is known before any work; a server caps it per request.
    """
    if settings.mode == "downsample":
        return 0, 0
    if settings.mode == "patching":
        return len(patch_grid(settings.scales[-1], settings.crop_size)), 0
    patches = points = 0
    for width, height in settings.scales[1:]:
        grid = len(patch_grid((width, height), settings.crop_size))
        selected = grid if settings.n_patches < 1 else min(settings.n_patches, grid)
        patches += selected
        points += point_count(settings.n_points, (width, height), selected, grid)
    return patches, points
