"""Unit tests of magnet_triton.metrics and the `score` / `compare` commands of magnet_triton.evaluate.

Expected values are worked out by hand in the comments, or by brute-force loops written here
independently of the vectorised code under test.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from magnet_triton import evaluate, metrics
from magnet_triton.errors import MagnetError

# --- confusion matrix and IoU ---------------------------------------------------------------------

# label            pred
# 0 0 1            0 1 1
# 1 2 2            1 2 0
# (label, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0)
LABEL = np.array([[0, 0, 1], [1, 2, 2]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 2, 0]], dtype=np.uint8)


def test_confusion_matrix_counts_label_rows_and_pred_columns():
    conf = metrics.confusion_matrix(PRED, LABEL, num_classes=3)
    expected = [
        [1, 1, 0],  # label 0: once right, once called 1
        [0, 2, 0],  # label 1: twice right
        [1, 0, 1],  # label 2: once called 0, once right
    ]
    assert conf.dtype == np.int64
    assert conf.tolist() == expected


def test_iou_per_class_matches_hand_computation():
    # class 0: TP 1, FP 1 (label 2 called 0), FN 1 (label 0 called 1) -> 1/3
    # class 1: TP 2, FP 1 (label 0 called 1), FN 0 -> 2/3
    # class 2: TP 1, FP 0, FN 1 -> 1/2
    iou = metrics.iou_per_class(metrics.confusion_matrix(PRED, LABEL, 3))
    np.testing.assert_allclose(iou, [1 / 3, 2 / 3, 1 / 2])
    assert metrics.mean_iou(metrics.confusion_matrix(PRED, LABEL, 3)) == pytest.approx(0.5)


def test_mean_iou_ignores_label_255():
    label = LABEL.copy()
    label[1, 2] = 255  # the only wrong prediction of class 2 (called 0) is now unlabelled
    conf = metrics.confusion_matrix(PRED, label, 3)
    # class 0: TP 1, FN 1 -> 1/2; class 1: 2/3 as before; class 2: TP 1 alone -> 1
    assert conf.sum() == 5
    np.testing.assert_allclose(metrics.iou_per_class(conf), [1 / 2, 2 / 3, 1.0])
    assert metrics.mean_iou(conf) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)


def test_ignored_pixels_may_hold_any_prediction():
    label = np.array([[0, 255]], dtype=np.uint8)
    pred = np.array([[0, 200]], dtype=np.uint8)  # 200 is not a class, but its pixel is ignored
    assert metrics.confusion_matrix(pred, label, 2).tolist() == [[1, 0], [0, 0]]


def test_custom_ignore_index_is_respected():
    label = np.array([[0, 1, 1]], dtype=np.int32)
    pred = np.array([[0, 0, 1]], dtype=np.int32)
    conf = metrics.confusion_matrix(pred, label, 2, ignore_index=1)
    assert conf.tolist() == [[1, 0], [0, 0]]


def test_class_absent_from_label_and_pred_is_nan_and_left_out_of_mean():
    conf = metrics.confusion_matrix(PRED, LABEL, num_classes=4)
    iou = metrics.iou_per_class(conf)
    assert math.isnan(iou[3])
    assert metrics.mean_iou(conf) == pytest.approx(0.5)  # same as with 3 classes


def test_class_only_predicted_scores_zero_iou():
    label = np.zeros((2, 2), dtype=np.uint8)
    pred = np.array([[0, 1], [0, 0]], dtype=np.uint8)
    iou = metrics.iou_per_class(metrics.confusion_matrix(pred, label, 2))
    # class 0: TP 3, FN 1 -> 3/4; class 1: TP 0, FP 1 -> 0
    np.testing.assert_allclose(iou, [3 / 4, 0.0])


def test_mean_iou_of_empty_matrix_is_nan_without_warning():
    with np.errstate(all="raise"):
        assert math.isnan(metrics.mean_iou(np.zeros((3, 3), dtype=np.int64)))


def test_confusion_matrix_rejects_shape_mismatch():
    with pytest.raises(MagnetError, match=r"differ in shape: \(2, 3\) vs \(3, 2\)"):
        metrics.confusion_matrix(PRED, LABEL.T, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.bool_])
def test_confusion_matrix_rejects_non_integer_dtype(dtype):
    with pytest.raises(MagnetError, match="integer class indices"):
        metrics.confusion_matrix(PRED.astype(dtype), LABEL, 3)


def test_confusion_matrix_rejects_label_out_of_range():
    with pytest.raises(MagnetError, match=r"label has class values \[2\] outside 0..1"):
        metrics.confusion_matrix(PRED, LABEL, 2)


def test_confusion_matrix_rejects_negative_prediction():
    with pytest.raises(MagnetError, match=r"pred has class values \[-1\]"):
        metrics.confusion_matrix(PRED.astype(np.int64) - 1, LABEL, 3)


def test_iou_rejects_non_square_matrix():
    with pytest.raises(MagnetError, match="square"):
        metrics.iou_per_class(np.zeros((2, 3)))


# --- mean boundary accuracy -------------------------------------------------------------------


def brute_force_band(label: np.ndarray, radius: int) -> np.ndarray:
    """Pixels p with a pixel of another label at offset (dy, dx), |dx| <= round(sqrt(r^2 - dy^2))."""
    h, w = label.shape
    band = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            for qy in range(h):
                dy = qy - y
                if abs(dy) > radius:
                    continue
                half = round(math.sqrt(radius * radius - dy * dy))
                for qx in range(max(0, x - half), min(w, x + half + 1)):
                    if label[qy, qx] != label[y, x]:
                        band[y, x] = True
    return band


def brute_force_mba(pred: np.ndarray, label: np.ndarray, radii: list[int], ignore: int) -> float:
    accuracies = []
    for radius in radii:
        band = brute_force_band(label, radius)
        hits = total = 0
        for y, x in zip(*np.nonzero(band)):
            if label[y, x] == ignore:
                continue
            total += 1
            hits += int(pred[y, x] == label[y, x])
        accuracies.append(hits / total)
    return sum(accuracies) / len(accuracies)


def test_boundary_radii_follow_cascadepsp_code():
    # (w + h) / 300 = 10.24; step (10.24 - 1) / 5 = 1.848; 1 + int(1.848 * i) for i = 0..4
    assert metrics.boundary_radii(1024, 2048) == [1, 2, 4, 6, 8]
    # paper's lower end: step (10.24 - 3) / 5 = 1.448; 3 + int(1.448 * i)
    assert metrics.boundary_radii(1024, 2048, min_radius=3) == [3, 4, 5, 7, 8]
    # small images never reach radius 2
    assert metrics.boundary_radii(64, 64) == [1, 1, 1, 1, 1]


def test_disk_of_radius_one_is_the_four_neighbour_cross():
    # rows dy = -1, 0, 1: half-widths round(sqrt(0)), round(sqrt(1)), round(sqrt(0))
    assert metrics.disk_half_widths(1).tolist() == [0, 1, 0]
    # r = 3: round(sqrt(9 - dy^2)) = 0, round(2.236), round(2.828), 3, ...
    assert metrics.disk_half_widths(3).tolist() == [0, 2, 3, 3, 3, 2, 0]


def test_boundary_band_of_vertical_edge_is_two_radius_wide():
    label = np.zeros((6, 10), dtype=np.uint8)
    label[:, 5:] = 1
    # radius 2: columns 3, 4 (class 0 within 2 of column 5) and 5, 6 (class 1 within 2 of column 4)
    band = metrics.boundary_band(label, 2)
    assert np.flatnonzero(band.all(axis=0)).tolist() == [3, 4, 5, 6]
    assert band.sum() == 6 * 4


def test_boundary_band_matches_brute_force_on_random_maps():
    rng = np.random.default_rng(7)
    for shape, radius in [((9, 13), 1), ((11, 8), 2), ((10, 12), 3), ((5, 17), 4), ((1, 9), 2), ((12, 1), 3)]:
        label = rng.integers(0, 3, size=shape).astype(np.uint8)
        label[rng.random(shape) < 0.6] = 1  # large flat regions, so the band is not everything
        np.testing.assert_array_equal(metrics.boundary_band(label, radius), brute_force_band(label, radius))


def test_mba_of_half_wrong_band_is_one_half():
    # label: columns 0-1 class 0, columns 2-3 class 1. Image is small, so all 5 radii are 1 and the
    # band is columns 1 and 2 (the cross touches the other class). Predicting all 0 gets column 1 right.
    label = np.array([[0, 0, 1, 1]] * 4, dtype=np.uint8)
    pred = np.zeros_like(label)
    assert metrics.mean_boundary_accuracy(pred, label) == pytest.approx(0.5)
    assert metrics.mean_boundary_accuracy(label, label) == 1.0


def test_mba_leaves_ignored_pixels_out_but_keeps_their_edges():
    # Column 3 is unlabelled: it makes column 2 a boundary pixel too, but is not scored itself.
    label = np.array([[0, 0, 1, 255]] * 3, dtype=np.uint8)
    pred = np.array([[0, 1, 1, 7]] * 3, dtype=np.uint8)
    # band at radius 1: columns 1, 2, 3; scored: 1 (wrong), 2 (right) -> 1/2
    assert metrics.mean_boundary_accuracy(pred, label) == pytest.approx(0.5)


def test_mba_matches_brute_force_on_random_multiclass_maps():
    rng = np.random.default_rng(3)
    label = np.zeros((14, 18), dtype=np.uint8)
    label[3:10, 4:12] = 1
    label[6:14, 9:16] = 2
    label[0:2, 14:18] = 255
    pred = label.copy()
    flip = rng.random(label.shape) < 0.25
    pred[flip] = rng.integers(0, 3, size=int(flip.sum()))
    radii = [1, 2, 3, 4]
    expected = brute_force_mba(pred, label, radii, ignore=255)
    assert metrics.mean_boundary_accuracy(pred, label, radii=radii) == pytest.approx(expected)


def test_mba_matches_cascadepsp_reference_with_opencv():
    """CascadePSP's compute_boundary_acc_multi_class, re-typed, on a map big enough for 5 radii."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(11)
    h, w = 300, 600  # (w + h) / 300 = 3 -> radii 1, 1, 1, 2, 2
    gt = np.zeros((h, w), dtype=np.uint8)  # class 0 is CascadePSP's void here
    for cls in (1, 2, 3, 4):
        y, x = rng.integers(0, h - 60), rng.integers(0, w - 90)
        gt[y : y + rng.integers(20, 60), x : x + rng.integers(30, 90)] = cls
    gt[gt == 0] = 5
    gt[:40, :40] = 0
    seg = gt.copy()
    seg[100:160, 200:320] = 3  # a wrong block; seg stays void where gt is, where both codes agree

    min_radius, max_radius, num_steps = 1, (w + h) / 300, 5
    accs = []
    for i in range(num_steps):
        radius = min_radius + int((max_radius - min_radius) / num_steps * i)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (radius * 2 + 1, radius * 2 + 1))
        region = np.zeros_like(gt)
        for c in np.unique(gt):
            if c == 0:
                continue
            region += cv2.morphologyEx((gt == c).astype(np.uint8), cv2.MORPH_GRADIENT, kernel)
        region = region > 0
        void = (gt[region] == 0).sum()
        accs.append(((gt[region] == seg[region]).sum() - void) / (region.sum() - void))
    expected = sum(accs) / num_steps
    assert 0.5 < expected < 0.99  # the case is not trivial
    assert metrics.mean_boundary_accuracy(seg, gt, ignore_index=0) == pytest.approx(expected)


def test_mba_of_label_without_boundary_is_nan():
    label = np.full((5, 5), 2, dtype=np.uint8)
    assert math.isnan(metrics.mean_boundary_accuracy(label, label))


def test_mba_rejects_mismatched_maps():
    with pytest.raises(MagnetError, match="differ in shape"):
        metrics.mean_boundary_accuracy(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))


def test_metrics_module_imports_without_opencv_or_torch():
    code = "import sys, magnet_triton.metrics; print('cv2' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- compare_maps -------------------------------------------------------------------------------


def test_compare_maps_reports_agreement_bbox_and_top_pairs():
    a = np.zeros((4, 5), dtype=np.uint8)
    b = a.copy()
    b[1, 2] = 3
    b[2, 3] = 3
    b[3, 1] = 1
    result = metrics.compare_maps(a, b, with_mask=True)
    assert result.num_pixels == 20
    assert result.num_different == 3
    assert result.agreement == pytest.approx(17 / 20)
    assert result.bbox == (1, 1, 4, 4)  # rows 1..3, columns 1..3, ends exclusive
    assert result.top_pairs == ((0, 3, 2), (0, 1, 1))
    assert result.diff_mask is not None and result.diff_mask.sum() == 3
    assert not result.identical


def test_compare_maps_of_equal_maps_has_no_bbox():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    result = metrics.compare_maps(a, a.copy())
    assert result.identical and result.agreement == 1.0
    assert result.bbox is None and result.top_pairs == () and result.diff_mask is None


def test_compare_maps_keeps_only_top_k_pairs():
    a = np.zeros((1, 6), dtype=np.uint8)
    b = np.array([[1, 1, 1, 2, 2, 3]], dtype=np.uint8)
    assert metrics.compare_maps(a, b, top_k=2).top_pairs == ((0, 1, 3), (0, 2, 2))


def test_compare_maps_rejects_shape_mismatch():
    with pytest.raises(MagnetError, match="differ in shape"):
        metrics.compare_maps(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))


def test_diff_image_paints_differences_red():
    a = np.zeros((2, 2), dtype=np.uint8)
    b = a.copy()
    b[0, 1] = 1
    image = metrics.diff_image(a, b)
    assert image.shape == (2, 2, 3) and image.dtype == np.uint8
    assert image[0, 1].tolist() == [255, 0, 0]
    assert image[0, 0, 0] == image[0, 0, 1] == image[0, 0, 2] < 255


# --- command line -----------------------------------------------------------------------------


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    from PIL import Image

    image = Image.fromarray(array)
    if mode == "P":
        image = image.convert("P")  # palette image whose indices equal the grey values
    image.save(path)
    return path


def run_cli(argv: list[str]) -> int:
    """Parse ``argv`` the way magnet_triton.cli does, with only this module's sub-commands."""
    parser = argparse.ArgumentParser(prog="magnet-triton")
    evaluate.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def scored_dirs(tmp_path: Path) -> tuple[Path, Path]:
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "label"
    pred_dir.mkdir()
    label_dir.mkdir()
    save_png(label_dir / "a.png", LABEL)
    save_png(pred_dir / "a.png", PRED)
    save_png(label_dir / "b.png", np.array([[0, 0], [1, 1]], np.uint8))
    save_png(pred_dir / "b.png", np.array([[0, 0], [1, 1]], np.uint8))
    return pred_dir, label_dir


def test_score_files_sums_confusion_over_images(scored_dirs):
    pred_dir, label_dir = scored_dirs
    report = evaluate.score_files([pred_dir], [label_dir], num_classes=3)
    # a.png as in test_iou_per_class...; b.png adds 2 right pixels of class 0 and 2 of class 1:
    # class 0: TP 3, FP 1, FN 1 -> 3/5; class 1: TP 4, FP 1 -> 4/5; class 2: 1/2
    np.testing.assert_allclose(report.per_class_iou, [3 / 5, 4 / 5, 1 / 2])
    assert report.mean_iou == pytest.approx((3 / 5 + 4 / 5 + 1 / 2) / 3)
    assert report.num_images == 2
    assert report.pixel_accuracy == pytest.approx(8 / 10)
    assert [p["name"] for p in report.per_image] == ["a", "b"]
    assert report.per_image[1]["mean_boundary_accuracy"] == 1.0


def test_score_reads_palette_pngs_as_class_indices(tmp_path):
    (tmp_path / "label").mkdir()
    (tmp_path / "pred").mkdir()
    label = save_png(tmp_path / "label" / "x.png", LABEL, mode="P")
    pred = save_png(tmp_path / "pred" / "x.png", LABEL)
    report = evaluate.score_files([pred], [label], num_classes=3)
    assert report.mean_iou == 1.0


def test_score_command_prints_and_writes_json(scored_dirs, tmp_path, capsys):
    pred_dir, label_dir = scored_dirs
    out = tmp_path / "scores.json"
    argv = [
        "score",
        "--pred",
        str(pred_dir),
        "--label",
        str(label_dir),
        "--num-classes",
        "4",
        "--json",
        str(out),
    ]
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "mBA" in text and "images: 2" in text
    data = json.loads(out.read_text())
    assert data["num_images"] == 2
    assert data["per_class_iou"][3] is None  # class 3 never occurs: NaN becomes null
    assert data["mean_iou"] == pytest.approx((3 / 5 + 4 / 5 + 1 / 2) / 3)


def test_score_names_labels_without_prediction(scored_dirs):
    pred_dir, label_dir = scored_dirs
    (pred_dir / "b.png").unlink()
    with pytest.raises(MagnetError, match=r"1 label\(s\) have no prediction .*: b"):
        evaluate.score_files([pred_dir], [label_dir], num_classes=3)


def test_score_names_predictions_without_label(scored_dirs):
    pred_dir, label_dir = scored_dirs
    save_png(pred_dir / "c.png", PRED)
    with pytest.raises(MagnetError, match=r"no label with the same stem: c"):
        evaluate.score_files([pred_dir], [label_dir], num_classes=3)


def test_score_rejects_prediction_of_other_size(scored_dirs):
    pred_dir, label_dir = scored_dirs
    save_png(pred_dir / "b.png", np.zeros((2, 3), np.uint8))
    with pytest.raises(MagnetError, match=r"b: prediction .* is 3x2 but label .* is 2x2"):
        evaluate.score_files([pred_dir], [label_dir], num_classes=3)


def test_score_rejects_colour_png(scored_dirs):
    pred_dir, label_dir = scored_dirs
    save_png(pred_dir / "b.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(MagnetError, match="not a single-channel class map"):
        evaluate.score_files([pred_dir], [label_dir], num_classes=3)


def test_score_rejects_missing_path(tmp_path):
    with pytest.raises(MagnetError, match="does not exist"):
        evaluate.score_files([tmp_path / "nope"], [tmp_path], num_classes=2)


def test_score_reports_class_values_beyond_num_classes(scored_dirs):
    pred_dir, label_dir = scored_dirs
    with pytest.raises(MagnetError, match=r"a: label has class values \[2\] outside 0..1"):
        evaluate.score_files([pred_dir], [label_dir], num_classes=2)


def test_compare_command_prints_differences_and_writes_diff(tmp_path, capsys):
    a = np.zeros((4, 5), np.uint8)
    b = a.copy()
    b[1:3, 2] = 4
    path_a, path_b = save_png(tmp_path / "a.png", a), save_png(tmp_path / "b.png", b)
    diff = tmp_path / "diff.png"
    assert run_cli(["compare", str(path_a), str(path_b), "--diff-out", str(diff)]) == 0
    text = capsys.readouterr().out
    assert "agreement: 90.0000 % (2 of 20 pixels differ)" in text
    assert "rows 1..2, columns 2..2" in text
    assert "0 -> 4: 2" in text
    from PIL import Image

    with Image.open(diff) as image:
        assert image.mode == "RGB" and image.size == (5, 4)
        assert image.getpixel((2, 1)) == (255, 0, 0)


def test_compare_files_rejects_maps_of_other_size(tmp_path):
    path_a = save_png(tmp_path / "a.png", np.zeros((4, 5), np.uint8))
    path_b = save_png(tmp_path / "b.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(MagnetError, match=r"is 5x4 but .* is 4x5"):
        evaluate.compare_files(path_a, path_b)


def test_evaluate_module_imports_without_numpy_or_pillow():
    code = "import sys, magnet_triton.evaluate; print('numpy' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
