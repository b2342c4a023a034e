"""``magnet-triton evaluate``: the four methods' table, the per-class table and the crop figure.

Tiny settings and seeded random weights: what is checked is the bookkeeping (rows, ranges, that the
table's figures are the scores of the saved maps), not accuracy.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from magnet_triton.cli import main
from magnet_triton.client.palettes import CITYSCAPES
from magnet_triton.errors import MagnetError
from magnet_triton.local import load_networks
from magnet_triton.settings import get_preset
from magnet_triton.synthetic.command import synthesize
from magnet_triton.training.comparison import (
    METHODS,
    compare_methods,
    markdown_table,
    method_settings,
    per_class_table,
)
from magnet_triton.training.crops import HEADER, choose_crops, rank_windows, render
from tests.tiny_repository import TINY_STREET as TINY


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    scenes = tmp_path_factory.mktemp("held_out")
    synthesize(scenes, 2, 100, (128, 64))
    out = tmp_path_factory.mktemp("evaluation")
    networks = load_networks(TINY, None, [], random_seed=0)
    return scenes, compare_methods(scenes, TINY, networks, out)


def test_each_method_runs_in_its_own_mode() -> None:
    runs = method_settings(get_preset("cityscapes"))
    assert [runs[mode].mode for _, mode in METHODS] == ["downsample", "patching", "magnet-fast", "magnet"]
    fast = get_preset("cityscapes-fast")
    assert (runs["magnet-fast"].n_patches, runs["magnet-fast"].n_points) == (fast.n_patches, fast.n_points)
    assert runs["magnet"] == get_preset("cityscapes")


@pytest.mark.slow
def test_the_table_has_the_four_methods_with_percentages(compared) -> None:
    _, comparison = compared
    rows = [
        line
        for line in markdown_table(comparison).splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    assert [row.split("|")[1].strip() for row in rows[1:]] == [label for label, _ in METHODS]
    for row in rows[1:]:
        miou, mba, accuracy = (float(cell) for cell in row.split("|")[2:5])
        assert all(0 <= v <= 100 for v in (miou, mba, accuracy))


@pytest.mark.slow
def test_the_table_reports_the_scores_of_the_saved_maps(compared) -> None:
    scenes, comparison = compared
    # mIoU from a confusion matrix counted here over the saved class maps and the labels.
    conf = np.zeros((19, 19), np.int64)
    for label_path in sorted((scenes / "labels").glob("*.png")):
        label = np.asarray(Image.open(label_path)).astype(np.int64)
        pred = np.asarray(Image.open(comparison.predictions / "magnet" / label_path.name)).astype(np.int64)
        keep = label != 255
        conf += np.bincount(label[keep] * 19 + pred[keep], minlength=19 * 19).reshape(19, 19)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    expected = np.mean(np.diag(conf)[union > 0] / union[union > 0])
    row = next(line for line in markdown_table(comparison).splitlines() if line.startswith("| MagNet |"))
    assert float(row.split("|")[2]) == pytest.approx(100 * expected, abs=0.006)


@pytest.mark.slow
def test_the_per_class_table_has_a_row_per_class(compared) -> None:
    _, comparison = compared
    lines = per_class_table(comparison).splitlines()
    assert len(lines) == 2 + 19 and lines[2].startswith("| road |") and lines[-1].startswith("| bicycle |")
    for line in lines[2:]:
        for cell in line.split("|")[2:-1]:
            assert cell.strip() == "n/a" or 0 <= float(cell) <= 100


def test_windows_are_ranked_by_thin_pixels_the_predictions_disagree_on() -> None:
    labels = np.zeros((64, 128), np.uint8)
    labels[:, 100:103] = 5  # a pole on the right
    labels[:, 10:13] = 5  # another on the left, where both predictions agree
    first, second = np.zeros_like(labels), np.zeros_like(labels)
    second[:, 100:103] = 5
    ranked = rank_windows(labels, first, second, [5], (16, 8))
    differing, thin, (x0, _, x1, _) = ranked[0]
    assert differing == 3 * 8 and thin == 3 * 8 and x0 <= 100 and x1 >= 103
    crops = choose_crops([("s", labels, first, second)], [5], (16, 8), count=3)
    assert len(crops) == 2 and all(c.box[0] <= 100 and c.box[2] >= 103 for c in crops)


def test_the_figure_shows_each_panel_in_its_place_and_colours() -> None:
    image = np.full((8, 16, 3), 77, np.uint8)
    labels = np.zeros((8, 16), np.uint8)
    labels[:, 4] = 5
    picture = render([[image, labels, labels, labels]], CITYSCAPES, zoom=2)
    assert picture.shape == (HEADER + 16 + 2 * 4, 4 * 32 + 5 * 4, 3)
    top = HEADER + 4
    np.testing.assert_array_equal(picture[top + 3, 4 + 5], [77, 77, 77])  # the image panel
    left = 4 + 3 * (32 + 4)  # the labels panel
    np.testing.assert_array_equal(picture[top + 3, left + 2 * 4], CITYSCAPES[5])
    np.testing.assert_array_equal(picture[top + 3, left], CITYSCAPES[0])


def test_the_evaluate_command_names_what_is_missing(tmp_path, capsys) -> None:
    argv = ["evaluate", "--preset", "cityscapes", "--out", str(tmp_path / "o")]
    assert main([*argv, "--scenes", str(tmp_path / "none"), "--random-weights", "0"]) == 1
    assert "has no images/ folder" in capsys.readouterr().err
    assert main([*argv, "--scenes", str(tmp_path), "--trained", str(tmp_path)]) == 1
    assert re.search(r"lacks backbone\.pth, refiner_1\.pth", capsys.readouterr().err)
    with pytest.raises(SystemExit):
        main([*argv, "--scenes", str(tmp_path), "--preset", "cityscapes-fast"])


def test_compare_methods_refuses_an_unknown_method(tmp_path) -> None:
    with pytest.raises(MagnetError, match="unknown method"):
        compare_methods(tmp_path, TINY, None, tmp_path, modes=("sliding",))


@pytest.mark.slow
def test_the_evaluate_command_writes_the_table_the_scores_and_the_figure(compared, tmp_path, capsys) -> None:
    scenes, _ = compared
    settings = tmp_path / "tiny.json"
    settings.write_text(json.dumps(TINY.to_dict()))
    out = tmp_path / "eval"
    argv = ["evaluate", "--settings", str(settings), "--scenes", str(scenes), "--out", str(out)]
    assert main([*argv, "--random-weights", "0", "--crops", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| MagNet |" in printed and "wrote" in printed
    assert (out / "table.md").read_text().count("\n| ") >= 4 + 19
    record = json.loads((out / "comparison.json").read_text())
    assert list(record["reports"]) == [mode for _, mode in METHODS] and len(record["stems"]) == 2
    with Image.open(out / "crops.png") as figure:
        assert figure.mode == "RGB" and figure.width > 4 * 16
