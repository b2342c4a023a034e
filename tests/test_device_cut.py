"""Resizing and cutting patches where the image lives: bit-exact with OpenCV, so a GPU pipeline keeps
the image on the device without changing a pixel of what the networks see."""

from __future__ import annotations

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from magnet_triton.ops.patches import cut_patches  # noqa: E402
from magnet_triton.ops.resize import resize_image_tensor  # noqa: E402

#: (input W x H, output W x H): the presets' scale and patch resizes, odd sizes, up- and downscales.
SIZES = [
    ((2048, 1024), (256, 128)),
    ((2048, 1024), (1024, 512)),
    ((2448, 2448), (1224, 1224)),
    ((612, 612), (508, 508)),
    ((613, 611), (508, 508)),
    ((256, 128), (300, 170)),
    ((100, 60), (333, 201)),
    ((77, 45), (508, 508)),
    ((1, 1), (4, 3)),
    ((5, 3), (1, 1)),
]


@pytest.mark.parametrize(("source", "target"), SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_tensor_resize_equals_opencv_inter_linear_bit_for_bit(source, target):
    image = np.random.default_rng(sum(source) + sum(target)).integers(
        0, 256, (*source[::-1], 3), dtype=np.uint8
    )
    expected = cv2.resize(image, target, interpolation=cv2.INTER_LINEAR)
    got = resize_image_tensor(torch.from_numpy(image), target).numpy()
    assert got.dtype == np.uint8 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "boxes",
    [
        [(0, 0, 256, 128), (200, 100, 456, 228), (264, 172, 520, 300)],  # one size: resized together
        [(0, 0, 256, 128), (10, 20, 310, 250)],  # two sizes: one by one
    ],
    ids=["one-size", "mixed-sizes"],
)
def test_patches_cut_from_a_tensor_equal_the_opencv_patches(boxes):
    image = np.random.default_rng(1).integers(0, 256, (300, 520, 3), dtype=np.uint8)
    expected = cut_patches(image, boxes, (200, 110))
    got = cut_patches(torch.from_numpy(image), boxes, (200, 110))
    assert got.dtype == torch.float32 and got.shape == (len(boxes), 3, 110, 200)
    assert torch.equal(got, expected)


def test_a_batch_of_crops_resizes_like_each_crop_alone():
    crops = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (4, 61, 97, 3), dtype=np.uint8))
    together = resize_image_tensor(crops, (50, 33))
    assert torch.equal(together, torch.stack([resize_image_tensor(c, (50, 33)) for c in crops]))
    expected = cv2.resize(crops[2].numpy(), (50, 33), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(together[2].numpy(), expected)


@pytest.mark.parametrize("mode", ["magnet", "magnet-fast", "patching"])
def test_the_pipeline_cutting_on_the_device_gives_the_same_maps(mode):
    from magnet_triton.local import load_networks
    from magnet_triton.pipeline import run_magnet
    from tests.tiny_repository import SEED, TINY, scene

    settings = TINY.with_overrides(mode=mode)
    networks = load_networks(settings, None, [], random_seed=SEED)
    image = scene(150, 230, seed=4)
    on_cpu = run_magnet(image, settings, networks)
    on_device = run_magnet(image, settings, networks, cut_on_device=True)
    np.testing.assert_array_equal(on_device.segmentation, on_cpu.segmentation)
    np.testing.assert_array_equal(on_device.confidence, on_cpu.confidence)
