"""Whole runs of the reference pipeline on small images, checked against independent computations.

The "networks" here are per-pixel colour classifiers: cheap, deterministic, and simple enough that the
expected class maps can be computed directly. The real networks get their own run at the end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from magnet_triton.errors import MagnetError
from magnet_triton.ops.geometry import patch_grid
from magnet_triton.ops.patches import cut_patches
from magnet_triton.ops.resize import resize_image
from magnet_triton.pipeline import check_image, run_magnet, select_patches
from magnet_triton.settings import Settings

NUM_CLASSES = 4


def small_settings(**changes) -> Settings:
    base = {
        "name": "tiny",
        "scales": ((32, 16), (64, 32), (128, 64)),
        "crop_size": (32, 16),
        "input_size": (32, 16),
        "num_classes": NUM_CLASSES,
        "backbone": "fpn",
        "n_refiners": 2,
        "n_points": 1.0,
        "smooth_kernel": 3,
    }
    base.update(changes)
    return Settings(**base)


class ColourNetworks:
    """Backbone: softmax of a fixed linear map of each pixel's colour. Refiner: returns the fine half."""

    def __init__(self, refiner: str = "fine") -> None:
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(NUM_CLASSES, 3, generator=generator) * 3
        self.bias = torch.randn(NUM_CLASSES, generator=generator)
        self.refiner_mode = refiner
        self.refiner_calls: list[int] = []

    def backbone(self, patches: torch.Tensor) -> torch.Tensor:
        logits = torch.einsum("kc,bchw->bkhw", self.weight, patches) + self.bias[None, :, None, None]
        return torch.softmax(logits, dim=1)

    def refiner(self, index: int, fine_and_coarse: torch.Tensor) -> torch.Tensor:
        self.refiner_calls.append(index)
        fine, coarse = fine_and_coarse.split(NUM_CLASSES, dim=1)
        return fine if self.refiner_mode == "fine" else coarse


def blocky_image(height: int = 50, width: int = 90, seed: int = 3) -> np.ndarray:
    """Random colour blocks: class boundaries that survive resizing, so maps are not uniform."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(-(-height // 10), -(-width // 10), 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(blocks, np.ones((10, 10, 1), dtype=np.uint8))[:height, :width])


def classes_of(probs: torch.Tensor, out_hw) -> np.ndarray:
    return F.interpolate(probs, size=out_hw, mode="bilinear", align_corners=False).argmax(1)[0].numpy()


def test_downsample_mode_is_the_coarse_prediction_resized():
    image, settings, nets = blocky_image(), small_settings(mode="downsample"), ColourNetworks()
    result = run_magnet(image, settings, nets)
    coarse = nets.backbone(cut_patches(resize_image(image, (32, 16)), [(0, 0, 32, 16)], (32, 16)))
    expected = classes_of(coarse, image.shape[:2])
    np.testing.assert_array_equal(result.segmentation, expected)
    np.testing.assert_array_equal(result.coarse_segmentation, expected)
    assert len(np.unique(expected)) > 1, "the test image should give more than one class"
    assert nets.refiner_calls == []


def test_patching_mode_pastes_the_backbone_on_every_last_scale_patch():
    image, settings, nets = blocky_image(), small_settings(mode="patching"), ColourNetworks()
    result = run_magnet(image, settings, nets, return_probabilities=True)
    scaled = resize_image(image, (128, 64))
    canvas = torch.zeros(1, NUM_CLASSES, 64, 128)
    for x0, y0, x1, y1 in patch_grid((128, 64), (32, 16)):  # no overlaps: each patch lands as is
        canvas[0, :, y0:y1, x0:x1] = nets.backbone(cut_patches(scaled, [(x0, y0, x1, y1)], (32, 16)))[0]
    np.testing.assert_array_equal(result.segmentation, classes_of(canvas, image.shape[:2]))


def test_magnet_replacing_every_point_with_the_fine_prediction_equals_patching():
    image = blocky_image()
    refined = run_magnet(
        image, small_settings(n_points=1.0), ColourNetworks("fine"), return_probabilities=True
    )
    patching = run_magnet(image, small_settings(mode="patching"), ColourNetworks(), return_probabilities=True)
    torch.testing.assert_close(refined.probabilities, patching.probabilities, rtol=0, atol=1e-6)
    assert refined.points_replaced == [64 * 32, 128 * 64]


def test_magnet_uses_the_refiner_of_each_transition_and_replaces_k_points():
    nets = ColourNetworks("fine")
    result = run_magnet(blocky_image(), small_settings(n_points=100), nets)
    assert nets.refiner_calls == [0, 1]
    assert result.points_replaced == [100, 100]


@pytest.mark.parametrize("scales_done", [1, 2, 3])
def test_a_deadline_returns_the_map_of_the_scales_it_reached(scales_done):
    """Out of time after k scales gives what a preset of only those k scales gives (the same steps,
    then the final resize), and says k."""
    image, nets = blocky_image(), ColourNetworks("fine")
    asked = []

    def out_of_time() -> bool:  # asked before each refined scale
        asked.append(1)
        return len(asked) >= scales_done

    result = run_magnet(image, small_settings(n_points=100), nets, out_of_time=out_of_time)
    shorter = small_settings(
        n_points=100, scales=((32, 16), (64, 32), (128, 64))[:scales_done], n_refiners=max(1, scales_done - 1)
    )
    expected = run_magnet(image, shorter, ColourNetworks("fine"))
    assert result.scales_done == expected.scales_done == scales_done
    np.testing.assert_array_equal(result.segmentation, expected.segmentation)
    np.testing.assert_array_equal(result.confidence, expected.confidence)
    assert nets.refiner_calls == [0, 1][: scales_done - 1]


def test_fast_mode_changes_only_pixels_inside_the_refined_patch():
    image = blocky_image()
    two_scales = {"scales": ((64, 32), (128, 64)), "crop_size": (64, 32), "n_refiners": 1}
    settings = small_settings(**two_scales, n_patches=1, mode="magnet-fast")
    fast = run_magnet(image, settings, ColourNetworks("fine"), return_probabilities=True)
    # Baseline: the same run replacing a single point, so the resizes and their rounding are the same.
    baseline = run_magnet(
        image, settings.with_overrides(n_points=1.5), ColourNetworks("fine"), return_probabilities=True
    )
    assert baseline.points_replaced == [1]
    # k = W*H * n_points * 1/4, then only points inside the one patch (shrunk by 10 px) survive.
    assert 0 < fast.points_replaced[0] <= (64 - 20) * (32 - 20)
    changed = (fast.probabilities != baseline.probabilities).any(dim=1)[0].numpy()
    rows, cols = np.nonzero(changed)
    assert len(rows) > 0
    # The 128x64 scale has four 64x32 patches, one per quadrant of the image: all changes sit in one.
    assert len(set((rows * 2 // image.shape[0]).tolist())) == 1
    assert len(set((cols * 2 // image.shape[1]).tolist())) == 1


def test_select_patches_takes_the_most_uncertain_unless_told_official():
    scores = torch.tensor([0.2, 0.9, 0.5, 0.9, 0.1])
    assert select_patches(scores, 2, "uncertain-first") == [1, 3]
    assert select_patches(scores, 2, "official") == [0, 4]
    assert select_patches(scores, 9, "uncertain-first") == [0, 1, 2, 3, 4]


def test_pipeline_is_deterministic():
    image, settings = blocky_image(), small_settings(n_points=300)
    first = run_magnet(image, settings, ColourNetworks(), return_probabilities=True)
    second = run_magnet(image, settings, ColourNetworks(), return_probabilities=True)
    assert torch.equal(first.probabilities, second.probabilities)


@pytest.mark.parametrize("mode", ["magnet", "magnet-fast", "downsample"])
def test_outputs_left_out_are_none_and_change_nothing_else(mode):
    image, settings = blocky_image(), small_settings(n_points=300).with_overrides(mode=mode)
    full = run_magnet(image, settings, ColourNetworks(), return_probabilities=True)
    lean = run_magnet(image, settings, ColourNetworks(), return_coarse=False, return_confidence=False)
    assert lean.coarse_segmentation is None and lean.confidence is None
    np.testing.assert_array_equal(lean.segmentation, full.segmentation)
    np.testing.assert_array_equal(full.segmentation, full.probabilities.argmax(dim=1)[0].numpy())
    top2 = full.probabilities.topk(2, dim=1).values[0]
    np.testing.assert_array_equal(full.confidence, (top2[0] - top2[1]).numpy())


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 3), dtype=np.float32), "uint8"),
        (np.zeros((4, 4), dtype=np.uint8), "H x W x 3"),
        (np.zeros((4, 4, 4), dtype=np.uint8), "H x W x 3"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images_get_a_clear_error(image, message):
    with pytest.raises(MagnetError, match=message):
        check_image(image)


@pytest.mark.parametrize("mode", ["magnet", "magnet-fast", "downsample", "patching"])
def test_every_mode_runs_with_the_real_networks(mode):
    from magnet_triton.local import load_networks

    settings = Settings(
        name="tiny-fpn",
        scales=((64, 64), (128, 128)),
        crop_size=(64, 64),
        input_size=(64, 64),
        num_classes=3,
        backbone="fpn",
        n_refiners=1,
        n_points=0.5,
        smooth_kernel=3,
    ).with_overrides(mode=mode)
    networks = load_networks(settings, None, [], random_seed=0)
    result = run_magnet(blocky_image(70, 90), settings, networks)
    assert result.segmentation.shape == (70, 90) and result.segmentation.dtype == np.uint8
    assert result.segmentation.max() < 3
    assert np.isfinite(result.confidence).all() and (result.confidence >= 0).all()
