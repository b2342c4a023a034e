"""The ``magnet-triton`` command line: exit codes, messages, and what it writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from magnet_triton.cli import main
from magnet_triton.errors import MagnetError


@pytest.fixture
def small_image(tmp_path):
    rng = np.random.default_rng(0)
    image = np.kron(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8), np.ones((20, 20, 1), np.uint8))
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    return path


def test_help_works_for_every_command(capsys):
    for command in ("segment-local", "export", "parity", "serve", "score", "compare", "demo"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert command in capsys.readouterr().out


def test_segment_local_writes_class_maps_at_the_image_size(small_image, tmp_path):
    out, coarse = tmp_path / "classes.png", tmp_path / "coarse.png"
    argv = ["segment-local", str(small_image), "--preset", "deepglobe", "--mode", "downsample"]
    assert main([*argv, "--random-weights", "0", "-o", str(out), "--coarse-out", str(coarse)]) == 0
    for path in (out, coarse):
        with Image.open(path) as written:
            assert written.mode == "L" and written.size == (180, 120)
            assert np.asarray(written).max() < 7


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backbone", "/nonexistent.pth", "--refiner", "/nonexistent.pth"], "not found"),
        (["--random-weights", "0", "--n-points", "-1"], "n_points must be > 0"),
        (["--random-weights", "0", "--mode", "magnet", "--n-patches", "3"], "magnet-fast"),
        ([], "give --backbone and --refiner"),
    ],
)
def test_segment_local_reports_user_errors_in_one_line(small_image, tmp_path, capsys, extra, message):
    argv = ["segment-local", str(small_image), "--preset", "deepglobe", "-o", str(tmp_path / "o.png"), *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_segment_local_reports_an_unreadable_image(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert (
        main(["segment-local", str(bad), "--preset", "deepglobe", "--random-weights", "0", "-o", "x.png"])
        == 1
    )
    assert "not a readable image" in capsys.readouterr().err


def test_an_unknown_preset_is_a_usage_error(small_image):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment-local", str(small_image), "--preset", "kitti", "-o", "x.png"])
    assert exit_info.value.code == 2


def test_export_writes_a_complete_repository(tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from magnet_triton.export.repository import read_manifest

    out = tmp_path / "repo"
    assert (
        main(
            [
                "export",
                "--preset",
                "deepglobe",
                "--random-weights",
                "3",
                "--out",
                str(out),
                "--max-batch",
                "2",
                "--max-queue-size",
                "3",
                "--queue-timeout-ms",
                "1500",
            ]
        )
        == 0
    )
    for model in ("magnet", "magnet_decode", "magnet_pipeline", "magnet_backbone", "magnet_refiner_1"):
        config = text_format.Parse((out / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert config.name == model
    policy = text_format.Parse(
        (out / "magnet_pipeline" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    ).dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (3, 1_500_000)
    assert (out / "magnet_backbone" / "1" / "model.onnx").stat().st_size > 1_000_000
    assert (out / "magnet_refiner_1" / "1" / "model.onnx").exists()
    manifest = read_manifest(out)
    networks = manifest["provenance"]["networks"]
    assert networks["backbone"] == {"seed": 3, "weights": "random"}
    assert manifest["provenance"]["parity"]["backbone"]["argmax_agreement"] >= 0.9999
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo")], "staging folders left behind"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target", "gpu"], "TensorRT"),
        (["--refiner", "a.pth", "b.pth"], "refiner"),
        (["--precision", "fp16"], "fp16"),
        (["--engine", "tensorrt"], "unknown engine 'tensorrt' for target cpu"),
        (["--target", "gpu", "--engine", "onnxruntime"], "unknown engine 'onnxruntime' for target gpu"),
        (["--cuda-graphs"], "CUDA graphs"),
        (["--max-queue-size", "-1"], "max_queue_size must be >= 0"),
    ],
)
def test_export_errors_leave_nothing_behind(tmp_path, capsys, extra, message):
    out = tmp_path / "repo"
    assert main(["export", "--preset", "deepglobe", "--random-weights", "0", "--out", str(out), *extra]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_export_with_the_torch_engine_writes_network_files_and_no_onnx(tmp_path, capsys):
    from magnet_triton.export.repository import read_manifest
    from magnet_triton.torch_engine import load_network_file

    out = tmp_path / "repo"
    argv = [
        "export",
        "--preset",
        "cityscapes",
        "--random-weights",
        "3",
        "--engine",
        "torch",
        "--out",
        str(out),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    assert read_manifest(out)["runtime"] == "cpu/torch"
    name, num_classes, _ = load_network_file(out / "magnet_backbone" / "1" / "model.pt")
    assert (name, num_classes) == ("hrnet18+ocr", 19)
    for k in (1, 2, 3):
        assert sorted(p.name for p in (out / f"magnet_refiner_{k}").iterdir()) == ["1", "config.pbtxt"]
    assert not list(out.rglob("*.onnx"))


def test_export_refuses_a_non_empty_or_unwritable_destination(tmp_path, capsys):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "keep.txt").write_text("mine")
    assert (
        main(["export", "--preset", "deepglobe", "--random-weights", "0", "--out", str(tmp_path / "repo")])
        == 1
    )
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "repo" / "keep.txt").read_text() == "mine"
    assert (
        main(["export", "--preset", "deepglobe", "--random-weights", "0", "--out", "/proc/magnet/repo"]) == 1
    )
    assert "cannot write" in capsys.readouterr().err


def test_magnet_error_is_a_value_error():
    assert issubclass(MagnetError, ValueError)
