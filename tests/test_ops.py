"""The algorithm's building blocks against direct formulas, hand-checked cases and recorded references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from magnet_triton.ops.geometry import patch_grid, patch_ratios, round_boxes
from magnet_triton.ops.median import median_filter
from magnet_triton.ops.refine import (
    margin,
    paste_average,
    point_count,
    replace_points,
    valid_mask,
    winner_and_margin,
)
from magnet_triton.ops.resize import nearest_source_indices, resize_nearest
from magnet_triton.ops.roi_align import roi_align
from magnet_triton.ops.topk import topk_lowest_index
from tests.reference_data import shared_file, shipped_file


# ----------------------------------------------------------------------------- patch grid
def test_patch_grid_matches_hand_computed_overlapping_case():
    # 10 wide with crops of 4: n = ceil(10/4) = 3, step = int(4 - (12 - 10) / 2) = 3 -> x0 in 0, 3, 6.
    # 5 high with crops of 5: one row.
    assert patch_grid((10, 5), (4, 5)) == [(0, 0, 4, 5), (3, 0, 7, 5), (6, 0, 10, 5)]


def test_patch_grid_truncates_the_step_and_lists_x_outer_y_inner():
    # 7 wide, crop 3: n = 3, step = int(3 - (9 - 7) / 2) = 2 -> 0, 2, 4 (last box ends at 7).
    # 5 high, crop 2: n = 3, step = int(2 - (6 - 5) / 2) = int(1.5) = 1 -> 0, 1, 2 (ends at 4, not 5).
    boxes = patch_grid((7, 5), (3, 2))
    assert boxes[:3] == [(0, 0, 3, 2), (0, 1, 3, 3), (0, 2, 3, 4)]
    assert [b[0] for b in boxes] == [0, 0, 0, 2, 2, 2, 4, 4, 4]


def test_patch_grid_refuses_a_crop_larger_than_the_image():
    with pytest.raises(ValueError, match="larger"):
        patch_grid((100, 50), (128, 50))


def test_patch_ratios_match_the_authors_grids():
    grids = json.loads(shipped_file("patch_grids.json").read_text())
    assert grids, "the reference file holds no grids"
    for key, expected in grids.items():
        size, crop = (tuple(int(v) for v in part.split("x")) for part in key.split("/"))
        np.testing.assert_allclose(
            patch_ratios(size, crop), np.asarray(expected), rtol=0, atol=1e-12, err_msg=key
        )


def test_round_boxes_lands_on_whole_pixels():
    ratios = patch_ratios((1224, 1224), (612, 612))
    assert round_boxes(ratios, (1224, 1224)) == patch_grid((1224, 1224), (612, 612))


# ----------------------------------------------------------------------------- roi_align
def _bilinear_direct(plane: np.ndarray, y: float, x: float) -> float:
    """torchvision's bilinear tap, written out from its definition (magnet-spec.md)."""
    height, width = plane.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = math.floor(y), math.floor(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * plane[y0, x0]
        + (1 - ly) * lx * plane[y0, x1]
        + ly * (1 - lx) * plane[y1, x0]
        + ly * lx * plane[y1, x1]
    )


def _roi_align_direct(plane: np.ndarray, box, out_hw) -> np.ndarray:
    x1, y1, x2, y2 = box
    ph, pw = out_hw
    roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    bin_w, bin_h = roi_w / pw, roi_h / ph
    gw, gh = math.ceil(roi_w / pw), math.ceil(roi_h / ph)
    out = np.zeros(out_hw)
    for i in range(ph):
        for j in range(pw):
            taps = [
                _bilinear_direct(
                    plane, y1 + i * bin_h + (iy + 0.5) * bin_h / gh, x1 + j * bin_w + (ix + 0.5) * bin_w / gw
                )
                for iy in range(gh)
                for ix in range(gw)
            ]
            out[i, j] = sum(taps) / len(taps)
    return out


def test_roi_align_of_a_whole_patch_averages_neighbouring_rows_and_columns():
    # A box of exactly the output size samples at half-pixel offsets: (v[y, x] + v[y+1, x] + ...) / 4.
    plane = np.arange(20, dtype=np.float32).reshape(4, 5)
    out = roi_align(torch.from_numpy(plane)[None, None], torch.tensor([[0.0, 0.0, 2.0, 2.0]]), (2, 2))
    expected = np.array(
        [[(0 + 1 + 5 + 6) / 4, (1 + 2 + 6 + 7) / 4], [(5 + 6 + 10 + 11) / 4, (6 + 7 + 11 + 12) / 4]]
    )
    np.testing.assert_allclose(out[0, 0].numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "box",
    [
        (-3.0, -2.0, 4.0, 3.0),  # starts before the map: taps below -1 are zero, others clamp
        (2.5, 1.5, 7.5, 6.0),  # bins straddle the last row and column
        (4.0, 3.0, 12.0, 9.0),  # runs past the edge: taps beyond H / W are zero
        (1.0, 1.0, 1.2, 1.1),  # tiny box: roi size clamps to 1
    ],
)
def test_roi_align_matches_the_direct_formula_at_borders(box):
    rng = np.random.default_rng(0)
    plane = rng.standard_normal((6, 8)).astype(np.float32)
    out = roi_align(torch.from_numpy(plane)[None, None], torch.tensor([box]), (3, 4))
    np.testing.assert_allclose(
        out[0, 0].numpy(), _roi_align_direct(plane.astype(np.float64), box, (3, 4)), atol=1e-5
    )


def _assert_roi_align_matches(cases: np.lib.npyio.NpzFile, names: list[str]) -> None:
    for name in names:
        prefix = f"roi_align/{name}/"
        features = torch.from_numpy(cases[prefix + "input"])
        out = roi_align(
            features, torch.from_numpy(cases[prefix + "boxes"]), tuple(cases[prefix + "output_size"])
        )
        expected = cases[prefix + "expected"]
        # float32 sums in another order: the error scales with the magnitude of the inputs.
        atol = 1e-5 * max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=atol, err_msg=name)


def _case_names(cases: np.lib.npyio.NpzFile, kind: str) -> list[str]:
    return sorted({key.split("/")[1] for key in cases.files if key.startswith(f"{kind}/")})


def test_roi_align_matches_torchvision_reference_cases():
    cases = np.load(shipped_file("operator_cases.npz"))
    names = _case_names(cases, "roi_align")
    assert len(names) == 40  # the random cases 00-39 ship; the two MagNet-sized ones are below
    _assert_roi_align_matches(cases, names)


def test_roi_align_matches_torchvision_on_magnet_sized_maps():
    """Cases 40 and 41: the Cityscapes boxes on a 512x256 map, the DeepGlobe ones on 1224x1224 (16 MB,
    so only in the full file)."""
    cases = np.load(shared_file("reference", "operator_cases.npz"))
    names = [name for name in _case_names(cases, "roi_align") if int(name) >= 40]
    assert names == ["40", "41"]
    _assert_roi_align_matches(cases, names)


# ----------------------------------------------------------------------------- resizes and median
def test_nearest_indices_follow_pytorch_float32_arithmetic():
    cases = np.load(shipped_file("operator_cases.npz"))
    names = _case_names(cases, "nearest")
    assert names
    for name in names:
        (in_h, in_w), (out_h, out_w) = cases[f"nearest/{name}/in_hw"], cases[f"nearest/{name}/out_hw"]
        np.testing.assert_array_equal(
            nearest_source_indices(int(in_h), int(out_h)), cases[f"nearest/{name}/src_rows"]
        )
        np.testing.assert_array_equal(
            nearest_source_indices(int(in_w), int(out_w)), cases[f"nearest/{name}/src_cols"]
        )


def test_nearest_indices_special_cases():
    np.testing.assert_array_equal(nearest_source_indices(5, 5), np.arange(5))
    np.testing.assert_array_equal(nearest_source_indices(3, 6), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(nearest_source_indices(6, 3), [0, 2, 4])


def test_resize_nearest_reads_the_listed_source_pixels():
    x = torch.arange(12.0).reshape(3, 4)
    out = resize_nearest(x, (2, 2))
    # rows floor(0 * 1.5), floor(1 * 1.5) = 0, 1; cols 0, 2
    assert out.tolist() == [[0.0, 2.0], [4.0, 6.0]]


def _median_direct(plane: np.ndarray, k: int) -> np.ndarray:
    pad = k // 2
    padded = np.pad(plane, pad)
    out = np.empty_like(plane)
    for i in range(plane.shape[0]):
        for j in range(plane.shape[1]):
            out[i, j] = np.sort(padded[i : i + k, j : j + k].ravel())[(k * k) // 2]
    return out


def test_median_filter_matches_direct_formula_with_zero_padding():
    rng = np.random.default_rng(1)
    plane = rng.random((9, 13)).astype(np.float32)
    for k in (1, 3, 5):
        np.testing.assert_array_equal(
            median_filter(torch.from_numpy(plane), k).numpy(), _median_direct(plane, k)
        )


def test_median_filter_matches_the_authors_reference():
    cases = np.load(shipped_file("operator_cases.npz"))
    names = _case_names(cases, "median")
    assert names
    for name in names:
        k = int(name.split("_")[0][1:])
        plane = torch.from_numpy(cases[f"median/{name}/input"])[0, 0]
        expected = cases[f"median/{name}/expected"][0, 0]
        np.testing.assert_array_equal(median_filter(plane, k).numpy(), expected, err_msg=name)


def test_median_filter_refuses_even_windows():
    with pytest.raises(ValueError, match="odd"):
        median_filter(torch.zeros(4, 4), 4)


# ----------------------------------------------------------------------------- top-k
def test_topk_breaks_ties_by_lowest_index():
    values = torch.tensor([0.5, 1.0, 0.5, 0.5, 1.0, 0.2])
    # Both 1.0s, then the first of the three 0.5s.
    assert topk_lowest_index(values, 3).tolist() == [1, 4, 0]


def test_topk_agrees_with_a_brute_force_sort_on_heavy_ties():
    rng = np.random.default_rng(2)
    values = rng.choice([0.0, 0.25, 0.5], size=1000).astype(np.float32)
    for k in (1, 7, 333, 999, 1000, 5000):
        expected = sorted(range(values.size), key=lambda i: (-values[i], i))[:k]
        assert topk_lowest_index(torch.from_numpy(values), k).tolist() == expected


# ----------------------------------------------------------------------------- refinement steps
def test_margin_is_top1_minus_top2():
    probs = torch.tensor([[0.1, 0.6], [0.7, 0.3], [0.2, 0.1]])[None, :, :, None]  # 1 x 3 x 2 x 1
    np.testing.assert_allclose(margin(probs)[0, :, 0].numpy(), [0.7 - 0.2, 0.6 - 0.3], rtol=1e-6)


def test_paste_average_divides_overlaps_and_leaves_uncovered_pixels_zero():
    patches = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 3.0)])
    canvas = paste_average(patches, [(0, 0, 2, 2), (1, 0, 3, 2)], (3, 4))
    expected = [[1.0, 2.0, 3.0, 0.0], [1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    assert canvas[0].tolist() == expected


def test_paste_average_resizes_each_patch_to_its_box():
    patch = torch.arange(4.0).reshape(1, 1, 2, 2)
    canvas = paste_average(patch, [(0, 0, 4, 4)], (4, 4))
    expected = torch.nn.functional.interpolate(patch, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(canvas, expected[0])


def test_valid_mask_shrinks_each_box_by_ten_pixels():
    mask = valid_mask([(0, 0, 30, 25)], (40, 40))
    assert mask.sum().item() == (30 - 20) * (25 - 20)
    assert mask[10, 10] and not mask[9, 10] and not mask[10, 20] and mask[14, 19]


def test_point_count_follows_step_12():
    assert point_count(32768, (2048, 1024), 128, 128) == 32768
    assert point_count(32768, (512, 256), 4, 16) == 32768
    assert point_count(32768, (256, 128), 1, 4) == 256 * 128 // 4
    assert point_count(0.75, (1224, 1224), 4, 4) == int(1224 * 1224 * 0.75)
    assert point_count(0.9, (2448, 2448), 3, 16) == int(2448 * 2448 * 0.9 * 3 / 16)


def test_replace_points_copies_every_channel_at_the_indices_only():
    probs = torch.zeros(1, 3, 2, 2)
    refined = torch.arange(12.0).reshape(3, 2, 2)
    replace_points(probs, refined, torch.tensor([0, 3]))
    assert probs[0, :, 0, 0].tolist() == [0.0, 4.0, 8.0]
    assert probs[0, :, 1, 1].tolist() == [3.0, 7.0, 11.0]
    assert probs[0, :, 0, 1].tolist() == [0.0, 0.0, 0.0]


def test_margin_of_a_tie_between_the_two_best_classes_is_zero():
    probs = torch.tensor([[0.4, 0.1], [0.4, 0.6], [0.2, 0.3]])[None, :, :, None]
    np.testing.assert_allclose(margin(probs)[0, :, 0].numpy(), [0.0, 0.6 - 0.3], atol=1e-7)


def test_winner_and_margin_equal_argmax_and_topk_on_random_maps_with_ties():
    generator = torch.Generator().manual_seed(0)
    # Values on a coarse grid make exact ties between the top classes common.
    probs = torch.randint(0, 5, (2, 7, 9, 11), generator=generator).float() / 4
    winner, top_margin = winner_and_margin(probs)
    top2 = probs.topk(2, dim=1).values
    assert torch.equal(winner, probs.argmax(dim=1)), "the first maximum, as argmax"
    assert torch.equal(top_margin, top2[:, 0] - top2[:, 1])
    assert (top_margin == 0).any(), "the case must contain ties"
