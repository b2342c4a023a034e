"""Presets, overrides and the clear errors for impossible settings."""

from __future__ import annotations

import dataclasses

import pytest

from magnet_triton.errors import MagnetError
from magnet_triton.settings import PRESETS, Settings, get_preset, settings_from_dict


def test_presets_carry_the_published_numbers():
    city, globe = PRESETS["cityscapes"], PRESETS["deepglobe"]
    assert city.scales == ((256, 128), (512, 256), (1024, 512), (2048, 1024))
    assert (city.crop_size, city.input_size, city.num_classes) == ((256, 128), (256, 128), 19)
    assert (city.backbone, city.n_refiners, city.n_points, city.smooth_kernel) == ("hrnet18+ocr", 3, 32768, 5)
    assert globe.scales == ((612, 612), (1224, 1224), (2448, 2448))
    assert (globe.input_size, globe.num_classes, globe.backbone, globe.n_points) == (
        (508, 508),
        7,
        "fpn",
        0.75,
    )
    assert (globe.n_refiners, globe.smooth_kernel) == (1, 11)
    fast = PRESETS["cityscapes-fast"]
    assert (fast.mode, fast.n_points, fast.n_patches) == ("magnet-fast", 0.9, 4)
    assert (PRESETS["deepglobe-fast"].n_points, PRESETS["deepglobe-fast"].n_patches) == (0.9, 3)


def test_the_inria_and_gleason_presets_carry_what_the_seed_and_the_reference_keys_fix():
    """The seed's table 3 fixes Inria's network, tile and input; the reference key list fixes Gleason's
    network and classes (its psp checkpoint has 4); the rest is chosen in the presets' comments."""
    import json
    from pathlib import Path

    inria, gleason = PRESETS["inria"], PRESETS["gleason"]
    assert (inria.backbone, inria.num_classes, inria.input_size, inria.scales[-1]) == (
        "fpn",
        2,
        (536, 536),
        (5000, 5000),
    )
    keys = json.loads((Path(__file__).parent / "reference" / "official_state_dict.json").read_text())
    assert gleason.backbone == "psp" and gleason.num_classes == keys["models"]["psp"]["num_classes"] == 4
    assert (gleason.crop_size, gleason.input_size, gleason.smooth_kernel) == ((625, 625), (625, 625), 11)
    for preset in (inria, gleason):
        # The scales double up to the 5000 x 5000 tile, the first being one crop.
        assert preset.scales == ((625, 625), (1250, 1250), (2500, 2500), (5000, 5000))
        assert get_preset(preset.name, n_points=0.5, smooth_kernel=7).n_points == 0.5  # overridable


def test_the_default_pixel_limit_admits_each_presets_finest_scale():
    from magnet_triton.export.repository import default_max_image_pixels

    assert default_max_image_pixels(PRESETS["cityscapes"]) == 16 * 1024 * 1024
    for name in PRESETS:
        width, height = PRESETS[name].scales[-1]
        assert default_max_image_pixels(PRESETS[name]) >= width * height
    assert default_max_image_pixels(PRESETS["inria"]) == 5000 * 5000


def test_every_field_can_be_overridden():
    s = get_preset("deepglobe", smooth_kernel=7, n_points=1000, patch_order="official", input_size=(512, 512))
    assert (s.smooth_kernel, s.n_points, s.patch_order, s.input_size) == (7, 1000, "official", (512, 512))


def test_n_patches_alone_implies_the_mode():
    assert get_preset("cityscapes", n_patches=4).mode == "magnet-fast"
    assert get_preset("cityscapes", n_patches=0).mode == "downsample"
    assert get_preset("cityscapes-fast", n_patches=-1).mode == "magnet"


def test_switching_to_fast_mode_uses_the_datasets_patch_count():
    assert get_preset("deepglobe", mode="magnet-fast").n_patches == 3
    assert get_preset("cityscapes-fast", mode="magnet").n_patches == -1


def test_settings_round_trip_through_a_dict():
    s = get_preset("cityscapes-fast")
    assert settings_from_dict(s.to_dict()) == s


def test_refiner_index_shares_the_last_refiner():
    s = get_preset("cityscapes")
    assert [s.refiner_index(i) for i in (1, 2, 3)] == [0, 1, 2]
    assert [get_preset("deepglobe").refiner_index(i) for i in (1, 2)] == [0, 0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scales": ((512, 256), (1024, 512))}, "more than one patch"),
        ({"scales": ((256, 128), (256, 128))}, "must grow"),
        ({"scales": ((256, 128), (1024, 512), (512, 256))}, "must grow"),
        ({"crop_size": (300, 128)}, "larger than the first scale"),
        ({"smooth_kernel": 4}, "odd"),
        ({"n_points": 0}, "n_points must be > 0"),
        ({"n_points": -3.0}, "n_points must be > 0"),
        ({"n_points": float("nan")}, "finite"),
        ({"mode": "turbo"}, "unknown mode"),
        ({"patch_order": "random"}, "unknown patch_order"),
        ({"backbone": "vgg"}, "unknown backbone"),
        ({"n_patches": -2}, "n_patches must be"),
        ({"mode": "magnet-fast", "n_patches": 0}, "needs n_patches >= 1"),
        ({"num_classes": 300}, "num_classes"),
        ({"n_refiners": 4}, "n_refiners"),
        ({"input_size": (0, 128)}, "positive"),
        ({"n_patches": 2.5}, "whole number"),
    ],
)
def test_impossible_settings_get_a_clear_error(changes, message):
    with pytest.raises(MagnetError, match=message):
        dataclasses.replace(PRESETS["cityscapes"], **changes)


def test_unknown_preset_and_unknown_field_are_named():
    with pytest.raises(MagnetError, match="unknown preset 'kitti'"):
        get_preset("kitti")
    with pytest.raises(MagnetError, match="unknown setting"):
        get_preset("cityscapes", n_pointz=3)
    with pytest.raises(MagnetError, match="unknown setting"):
        settings_from_dict({"scales": [[1, 1]], "bogus": 1})


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["cityscapes"].n_points = 5  # type: ignore[misc]
    assert isinstance(hash(PRESETS["cityscapes"]), int)
    assert isinstance(PRESETS["cityscapes"], Settings)
