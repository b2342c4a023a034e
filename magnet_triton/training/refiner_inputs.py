"""What a refiner is trained on: the backbone's fine and coarse predictions of one patch, as at inference.

At inference, transition ``i`` hands refiner ``min(n_refiners, i) - 1`` the backbone's probabilities on
a patch of scale ``i`` (fine) and a crop of the running prediction, which comes from scale ``i - 1``
upsampled to scale ``i`` and ``roi_align``-ed on the patch's box (coarse). Training rebuilds the same
pair from one coarser window: a ``crop_size`` window of scale ``i - 1`` holding the patch's region is
run through the (frozen) backbone, its probabilities are upsampled to scale ``i``'s pixels and the
patch's box is cut from them with the pipeline's ``roi_align``. The target is the patch's labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from magnet_triton.ops.geometry import Box
from magnet_triton.ops.patches import cut_patches
from magnet_triton.ops.resize import resize_bilinear
from magnet_triton.ops.roi_align import roi_align
from magnet_triton.training.data import Batch, SceneSet


def coarse_window(
    region: tuple[float, float, float, float],
    scale: tuple[int, int],
    crop: tuple[int, int],
    rng: np.random.Generator,
) -> Box:
    """A whole-pixel ``crop`` window inside ``scale`` (W, H) that holds ``region`` (float pixels of that
    scale), at a random position among those that do; nearest to holding it when none does."""
    bounds = []
    for lo, hi, length, size in (
        (region[0], region[2], scale[0], crop[0]),
        (region[1], region[3], scale[1], crop[1]),
    ):
        first, last = max(0, math.ceil(hi) - size), min(math.floor(lo), length - size)
        start = int(rng.integers(first, last + 1)) if first <= last else min(max(0, round(lo)), length - size)
        bounds.append(start)
    return (bounds[0], bounds[1], bounds[0] + crop[0], bounds[1] + crop[1])


def refiner_batch(
    data: SceneSet,
    backbone: Callable[[torch.Tensor], torch.Tensor],
    rng: np.random.Generator,
    batch: int,
    transitions: Sequence[int],
) -> Batch:
    """``batch`` refiner samples, each of a random scene and one of ``transitions`` (scale indices >= 1).

    ``backbone`` maps K x 3 x h x w normalised patches to K x C x h x w probabilities (no gradient).

    Returns:
        A :class:`Batch` whose ``images`` are B x 2C x h x w float32 (fine probabilities, then coarse,
        the refiner's input layout) and whose ``labels`` are B x h x w int64, 255 = ignore.
    """
    settings = data.settings
    in_w, in_h = settings.input_size
    fine_patches, coarse_patches, targets, local_boxes, windows_px, flips = [], [], [], [], [], []
    for _ in range(batch):
        scene, i = int(rng.integers(len(data))), int(transitions[int(rng.integers(len(transitions)))])
        (width, height), (prev_w, prev_h) = settings.scales[i], settings.scales[i - 1]
        box = data.random_box(rng, i)
        fx, fy = prev_w / width, prev_h / height
        window = coarse_window(
            (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy), (prev_w, prev_h), settings.crop_size, rng
        )
        fine, target = data.patch(scene, i, box)
        fine_patches.append(fine)
        targets.append(target)
        coarse_patches.append(
            cut_patches(data.scaled[scene][i - 1][0], [window], settings.input_size, data.normalization)
        )
        # The window in scale-i pixels, and the patch's box relative to it.
        wx0, wy0 = window[0] / fx, window[1] / fy
        windows_px.append((round(settings.crop_size[1] / fy), round(settings.crop_size[0] / fx)))
        local_boxes.append((box[0] - wx0, box[1] - wy0, box[2] - wx0, box[3] - wy0))
        flips.append(bool(rng.random() < 0.5))
    with torch.no_grad():
        probs = backbone(torch.cat(fine_patches + coarse_patches)).float().cpu()
    fine_probs, coarse_probs = probs[:batch], probs[batch:]
    inputs = []
    for k in range(batch):
        upsampled = resize_bilinear(coarse_probs[k : k + 1], windows_px[k])
        coarse = roi_align(upsampled, torch.tensor([local_boxes[k]]), (in_h, in_w))
        pair = torch.cat([fine_probs[k : k + 1], coarse], dim=1)
        inputs.append(pair.flip(-1) if flips[k] else pair)
        if flips[k]:
            targets[k] = targets[k].flip(-1)
    return Batch(torch.cat(inputs), torch.cat(targets))
