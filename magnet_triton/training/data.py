"""Training samples: random crops of a folder of scenes at each scale of a preset.

Every scene is resized once to every scale of the preset, with the inference pipeline's own resize
(OpenCV bilinear, no anti-aliasing: a network trained on smoothed images would see sharper ones at
inference), and its labels with PyTorch-``nearest`` indices from the full-resolution map (labels are
never blended). A crop of ``crop_size`` at a scale is then resized to ``input_size``, as at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from magnet_triton.errors import MagnetError
from magnet_triton.networks.registry import network_entry
from magnet_triton.ops.geometry import Box
from magnet_triton.ops.patches import cut_patches
from magnet_triton.ops.resize import nearest_source_indices, resize_image
from magnet_triton.settings import Settings


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H x W uint8 labels -> ``size`` (W, H) with PyTorch ``nearest`` semantics (uint8)."""
    rows = nearest_source_indices(labels.shape[0], size[1])
    cols = nearest_source_indices(labels.shape[1], size[0])
    return labels[rows[:, None], cols[None, :]]


@dataclass
class Batch:
    """Backbone inputs and targets.

    Attributes:
        images: B x 3 x h x w float32, normalised for the backbone (``input_size`` = (w, h)).
        labels: B x h x w int64 train ids, 255 = ignore.
    """

    images: torch.Tensor
    labels: torch.Tensor


class SceneSet:
    """A folder of scenes (``images/``, ``labels/``) held in memory at every scale of ``settings``.

    Memory: about 1.4 x (3 + 1) bytes per full-resolution pixel per scene.
    """

    def __init__(self, folder: str | Path, settings: Settings) -> None:
        from magnet_triton.imageio import read_class_map, read_image
        from magnet_triton.synthetic.command import scene_pairs

        self.folder = Path(folder)
        self.settings = settings
        self.normalization = network_entry(settings.backbone).normalization
        self.stems: list[str] = []
        self.scaled: list[list[tuple[np.ndarray, np.ndarray]]] = []  # [scene][scale] -> (image, labels)
        for stem, image_path, label_path in scene_pairs(folder):
            image, labels = read_image(image_path), read_class_map(label_path)
            if labels.shape != image.shape[:2]:
                raise MagnetError(
                    f"{stem}: label {labels.shape[::-1]} and image {image.shape[1::-1]} sizes differ"
                )
            if labels.dtype != np.uint8:
                raise MagnetError(f"{label_path}: labels must be 8-bit class maps, got {labels.dtype}")
            bad = np.unique(labels[(labels >= settings.num_classes) & (labels != 255)])
            if bad.size:
                raise MagnetError(
                    f"{label_path}: class(es) {bad.tolist()} outside 0..{settings.num_classes - 1} (and 255)"
                )
            self.stems.append(stem)
            self.scaled.append([(resize_image(image, s), resize_labels(labels, s)) for s in settings.scales])

    def __len__(self) -> int:
        return len(self.stems)

    def random_box(self, rng: np.random.Generator, scale_index: int) -> Box:
        """A whole-pixel ``crop_size`` box at a uniformly random position in scale ``scale_index``."""
        (width, height), (cw, ch) = self.settings.scales[scale_index], self.settings.crop_size
        x0, y0 = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
        return (x0, y0, x0 + cw, y0 + ch)

    def patch(
        self, scene: int, scale_index: int, box: Box, flip: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone input (1 x 3 x h x w float32) and the target (1 x h x w int64) of one box."""
        image, labels = self.scaled[scene][scale_index]
        x0, y0, x1, y1 = box
        patch = cut_patches(image, [box], self.settings.input_size, self.normalization)
        target = torch.from_numpy(
            resize_labels(labels[y0:y1, x0:x1], self.settings.input_size).astype(np.int64)
        )
        if flip:
            patch, target = patch.flip(-1), target.flip(-1)
        return patch, target[None]

    def backbone_batch(self, rng: np.random.Generator, batch: int) -> Batch:
        """``batch`` crops, each of a random scene at a random scale and position, half of them mirrored."""
        images, labels = [], []
        for _ in range(batch):
            scene, scale = int(rng.integers(len(self))), int(rng.integers(self.settings.num_scales))
            patch, target = self.patch(
                scene, scale, self.random_box(rng, scale), flip=bool(rng.random() < 0.5)
            )
            images.append(patch)
            labels.append(target)
        return Batch(torch.cat(images), torch.cat(labels))
