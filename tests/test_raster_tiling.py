"""Windows of a raster too large for one request: every pixel kept once, every window within the limit,
the overlap kept, and the seams at the centre lines (pure geometry, no files)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from magnet_triton.client.limits import limit_from_refusal, limits_from_config
from magnet_triton.errors import MagnetError
from magnet_triton.raster.tiling import plan_windows, window_size_for


@pytest.mark.parametrize(
    ("height", "width", "max_pixels", "overlap"),
    [
        (1000, 1100, 360_000, 64),
        (20_000, 20_000, 16 * 1024 * 1024, 625),
        (301, 5000, 90_000, 32),
        (7, 9, 50, 3),
    ],
)
def test_kept_parts_cover_every_pixel_exactly_once_within_the_limit(height, width, max_pixels, overlap):
    plan = plan_windows(height, width, max_pixels=max_pixels, overlap=overlap)
    kept = np.zeros((height, width), dtype=np.int32)
    for w in plan.windows:
        assert w.pixels <= max_pixels
        assert w.row >= 0 and w.row + w.height <= height and w.col >= 0 and w.col + w.width <= width
        # The kept part lies inside the window.
        assert w.row <= w.keep_row and w.keep_row + w.keep_height <= w.row + w.height
        assert w.col <= w.keep_col and w.keep_col + w.keep_width <= w.col + w.width
        kept[w.keep_row : w.keep_row + w.keep_height, w.keep_col : w.keep_col + w.keep_width] += 1
    assert (kept == 1).all()
    assert plan.tiled == (height * width > max_pixels)


def test_neighbours_overlap_by_at_least_the_overlap_and_keep_half_of_it_each():
    plan = plan_windows(1000, 1100, max_pixels=360_000, overlap=64)
    assert plan.window_size == (600, 600) and plan.overlap == 64 and plan.grid == (2, 2)
    rows = sorted({w.row for w in plan.windows})
    cols = sorted({w.col for w in plan.windows})
    for starts in (rows, cols):
        for a, b in itertools.pairwise(starts):
            assert a + 600 - b >= 64  # the overlap of two neighbours
    for w in plan.windows:
        # A seam (a kept edge that is not the raster's) is at least overlap/2 from the window's edge.
        top, left = w.keep_row - w.row, w.keep_col - w.col
        bottom = w.row + w.height - (w.keep_row + w.keep_height)
        right = w.col + w.width - (w.keep_col + w.keep_width)
        for margin, at_raster_edge in (
            (top, w.keep_row == 0),
            (left, w.keep_col == 0),
            (bottom, w.keep_row + w.keep_height == 1000),
            (right, w.keep_col + w.keep_width == 1100),
        ):
            assert at_raster_edge or margin >= 32


def test_the_seam_is_the_centre_line_of_the_overlap():
    plan = plan_windows(100, 150, max_pixels=100 * 100, overlap=20)
    first, second = plan.windows[0], plan.windows[1]
    overlap_start, overlap_stop = second.col, first.col + first.width
    assert first.keep_col + first.keep_width == (overlap_start + overlap_stop) // 2 == second.keep_col


def test_a_raster_within_the_limit_is_one_window_of_itself():
    plan = plan_windows(500, 700, max_pixels=500 * 700, overlap=64)
    assert not plan.tiled
    (only,) = plan.windows
    assert (only.row, only.col, only.height, only.width) == (0, 0, 500, 700)
    assert only.keep_slices == (slice(0, 500), slice(0, 700))


def test_a_long_thin_raster_gets_windows_as_long_as_its_short_side():
    assert window_size_for(300, 20_000, 90_000) == (300, 300)
    assert window_size_for(200, 20_000, 90_000) == (450, 200)


def test_a_window_over_the_limit_is_refused_naming_it():
    with pytest.raises(
        MagnetError, match=r"a 700x700 window is 490000 pixels, over the server's limit of 360000"
    ):
        plan_windows(2000, 2000, max_pixels=360_000, overlap=64, window_size=(700, 700))


def test_an_overlap_too_large_for_the_windows_is_reduced_to_a_quarter_of_them():
    plan = plan_windows(1000, 1000, max_pixels=200 * 200, overlap=150)
    assert plan.overlap == 50


def test_the_limit_and_the_patch_come_from_the_pipeline_config():
    config = {
        "config": {
            "parameters": {
                "max_image_pixels": {"string_value": "360000"},
                "settings": {"string_value": '{"crop_size": [64, 48], "scales": [[64, 48]]}'},
            }
        }
    }
    limits = limits_from_config(config)
    assert limits.max_image_pixels == 360_000 and limits.crop_size == (64, 48) and limits.stated
    assert limits.default_overlap == 64
    bare = limits_from_config({"parameters": {}})
    assert not bare.stated and bare.max_image_pixels == 16 * 1024 * 1024


def test_the_limit_is_read_from_the_pipelines_refusal_too():
    message = (
        "magnet_pipeline rejected the request: the image is 700x700 = 490000 pixels, over this server's "
        "limit of 360000 (the pipeline's parameter max_image_pixels); send a smaller image"
    )
    assert limit_from_refusal(message) == 360_000
    assert limit_from_refusal("something else") is None


def test_raster_outputs_never_name_the_input_and_end_with_the_class_map(tmp_path):
    from magnet_triton.client.raster_run import raster_outputs

    files = raster_outputs(tmp_path / "scene.tif", tmp_path, ["confidence", "coarse"], geotiff=True)
    assert [p.name for p in files.values()] == [
        "scene_coarse.png",
        "scene_confidence.tiff",
        "scene_classes.tif",
        "scene.png",  # last: --resume takes a raster with its class map for done
    ]
    assert tmp_path / "scene.tif" not in files.values()
