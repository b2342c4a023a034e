"""The benchmark code paths on the tiny repository: a smoke test, not a measurement.

One server, tiny request counts: the side-by-side table has every row with positive times and the
class-map agreement; perf_analyzer (when installed: ``bash benchmarks/install_perf_analyzer.sh``) writes
CSVs with the expected columns and one row per concurrency, composing models included.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_repository import SEED, TINY, build_tiny_repository

pytestmark = pytest.mark.server
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return build_tiny_repository(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from benchmarks.common import png_bytes
    from magnet_triton.sample import street_scene

    path = tmp_path_factory.mktemp("image") / "scene.png"
    path.write_bytes(png_bytes(street_scene(256, 128)))
    return path


@pytest.fixture(scope="module")
def results(repository, image, tmp_path_factory):
    """One quick run of everything (side by side, then perf_analyzer if installed) on one server."""
    from benchmarks import run_all
    from magnet_triton.errors import MagnetError
    from magnet_triton.server import find_tritonserver

    try:
        find_tritonserver()
    except MagnetError as e:
        pytest.skip(f"no tritonserver here: {e}")
    out = tmp_path_factory.mktemp("out")
    args = run_all.build_parser().parse_args(
        ["--repository", str(repository), "--out", str(out), "--quick", "--image", str(image)]
    )
    record = {"date": "d", "cpu": "c", "cores": 2, "gpu": "none", "commit": "x", "command": "test"}
    return out, run_all.run(args, record)


def test_the_eager_baseline_with_lowest_index_ties_equals_run_magnet_exactly(repository):
    from benchmarks.common import networks_from_manifest, served_settings
    from benchmarks.eager_reference import EagerMagNet
    from magnet_triton.pipeline import run_magnet
    from magnet_triton.sample import street_scene

    settings = served_settings(repository)
    assert settings == TINY
    networks = networks_from_manifest(repository, settings)
    pixels = street_scene(200, 150, seed=SEED)
    for mode in ("magnet", "magnet-fast", "downsample", "patching"):
        moded = settings.with_overrides(mode=mode)
        expected = run_magnet(pixels, moded, networks)
        eager = EagerMagNet(networks.backbone_module, networks.refiner_modules, tie_break="lowest-index")
        got = eager(pixels, moded)
        np.testing.assert_array_equal(got.segmentation, expected.segmentation, err_msg=mode)
        assert got.points_replaced == expected.points_replaced
        assert got.timings_s["backbone"] > 0


def test_the_side_by_side_table_has_every_row_with_positive_times_and_the_agreement(results):
    from benchmarks.report import side_by_side_markdown, targets

    _, data = results
    (section,) = data["side_by_side"]
    systems = {(r["system"], r["mode"], r["concurrency"]) for r in section["rows"]}
    assert systems == {
        ("run_magnet (PyTorch, batched)", "magnet", 1),
        ("eager, authors' structure (PyTorch)", "magnet", 1),
        ("Triton CPU (magnet_pipeline)", "magnet", 1),
        ("Triton CPU (magnet_pipeline)", "magnet", 2),
        ("Triton CPU (magnet_pipeline)", "downsample", 1),
    }
    for row in section["rows"]:
        assert row["latency_p50_s"] > 0 and row["throughput_per_s"] > 0, row
    assert section["agreement"]["Triton vs run_magnet"] == 1.0
    assert section["agreement"]["eager, authors' structure (PyTorch) vs run_magnet"] > 0.99
    for floor in section["floors"].values():
        assert floor["seconds"] > 0 and floor["image_flops"] > 0
    assert 0 <= targets(section)["outside_networks"] < 1
    assert section["gpu"] == "no GPU: not measured" or isinstance(section["gpu"], dict)
    text = "\n".join(side_by_side_markdown(section, data["record"]))
    assert "Triton vs run_magnet: 100.0000%" in text
    assert "floor: FLOPs / backbone FLOP rate" in text


def test_perf_analyzer_writes_csvs_with_the_expected_columns_and_rows(results):
    from benchmarks.perf_sweep import CSV_COLUMNS

    out, data = results
    perf = data["perf_analyzer"]
    if "skipped" in perf:
        pytest.skip(perf["skipped"])
    runs = {run["name"]: run for run in perf["runs"]}
    assert set(runs) == {"ensemble_bytes", "pipeline_raw", "pipeline_sweep"}
    expected_levels = {"ensemble_bytes": [1], "pipeline_raw": [1], "pipeline_sweep": [1, 2]}
    for name, run in runs.items():
        with open(run["csv"], newline="") as f:
            rows = list(csv.DictReader(f))
        assert set(CSV_COLUMNS) <= set(rows[0]), name
        assert [int(r["Concurrency"]) for r in rows] == expected_levels[name]
        assert all(float(r["Inferences/Second"]) > 0 for r in rows)
    # The sweep breaks out the backbone and each refiner model (BLS composing models).
    assert set(runs["pipeline_sweep"]["composing"]) == {
        "magnet_backbone_v1",
        "magnet_refiner_1_v1",
        "magnet_refiner_2_v1",
    }
    assert (out / "perf_analyzer" / "pipeline_sweep.magnet_backbone_v1.csv").is_file()
    plot = runs["pipeline_sweep"].get("plot")
    if plot is not None:
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_gpu_comparison_runs_its_code_path_on_the_cpu(repository):
    from benchmarks.gpu_compare import run_gpu_compare
    from magnet_triton.sample import street_scene

    # FP16 convolutions are slow on a CPU: the half-precision wrapper has its own test below.
    result = run_gpu_compare(
        repository, TINY, street_scene(128, 128), device="cpu", repeats=1, allow_fp16=False
    )
    assert result is not None
    assert result["eager_fp32_s"] > 0 and result["pipeline_s"] > 0
    assert result["pipeline_precision"] == "fp32"
    assert result["pipeline_vs_eager_agreement"] > 0.99


def test_the_half_precision_networks_return_float32_probabilities(repository):
    import torch

    from benchmarks.common import networks_from_manifest
    from benchmarks.gpu_compare import HalfNetworks

    networks = networks_from_manifest(repository, TINY)
    half = HalfNetworks(networks.backbone_module, networks.refiner_modules, max_batch=2)
    inputs = torch.rand(3, 2 * TINY.num_classes, 16, 16)
    probs = half.refiner(1, inputs)
    assert probs.dtype == torch.float32 and probs.shape == (3, TINY.num_classes, 16, 16)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3, 16, 16), atol=1e-3, rtol=0)


def test_without_a_gpu_the_gpu_comparison_says_not_measured(repository):
    import torch

    from benchmarks.gpu_compare import run_gpu_compare

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert run_gpu_compare(repository, TINY, np.zeros((64, 64, 3), np.uint8)) is None


def test_the_outputs_benchmark_gets_one_map_alone_and_three_with_all_and_reports_the_ratio(
    repository, image, tmp_path
):
    from benchmarks import outputs

    code = outputs.main(
        ["--repository", str(repository), "--image", str(image), "--rounds", "1", "--out", str(tmp_path)]
    )
    assert code == 0
    text = (tmp_path / "results.md").read_text()
    # Each kind's row says how many maps came back: the class map alone, then all three.
    assert "| segmentation only | 1 | 1 |" in text
    assert "| all three | 1 | 3 |" in text
    assert "segmentation only / all three, median of the 1 back-to-back pairs:" in text
