"""The client library and ``magnet-client``: validation, errors, retries, transports, palettes, the CLI.

Tests marked ``server`` talk to one real tritonserver started for this module from the tiny CPU
repository (random weights); the rest need no server.
"""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from magnet_triton import io_spec
from magnet_triton.client import (
    CITYSCAPES,
    DEEPGLOBE,
    AsyncMagnetClient,
    BadRequestError,
    ConnectionFailedError,
    DependencyMissingError,
    MagnetClient,
    MagnetClientError,
    RequestTimeoutError,
    ServerError,
    SharedMemoryError,
    cli,
    colorize,
    generic_palette,
    get_palette,
    overlay,
    write_overlay,
)
from magnet_triton.client.errors import ModelRecoveringError, ServerBusyError, from_triton
from magnet_triton.client.progress import ProgressBar
from magnet_triton.client.result import statistics_delta, summarize_health
from magnet_triton.client.retry import RetryPolicy
from magnet_triton.errors import MagnetError
from magnet_triton.server import free_port
from tests.tiny_repository import build_tiny_repository, png_bytes, skip_without_tritonserver
from tests.tiny_repository import scene as _scene


def scene(height: int = 120, width: int = 170, seed: int = 0) -> np.ndarray:
    return _scene(height, width, seed)


grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")


# ---------------------------------------------------------------------- helpers
def closed_url() -> str:
    return f"127.0.0.1:{free_port()}"


def offline_client(**options) -> MagnetClient:
    """A client of a port nobody listens on: for what must fail before (or instead of) sending."""
    options = {"retries": 0, "retry_backoff_s": 0.01, **options}
    return MagnetClient(closed_url(), **options)


def raw_segmentation(url: str, image: np.ndarray) -> np.ndarray:
    """The class map straight from tritonclient, no magnet_triton.client involved."""
    with grpc.InferenceServerClient(url) as raw:
        tensor = grpc.InferInput(io_spec.IMAGE, list(image.shape), "UINT8")
        tensor.set_data_from_numpy(image)
        return raw.infer(io_spec.PIPELINE_MODEL, [tensor]).as_numpy(io_spec.SEGMENTATION)


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    skip_without_tritonserver()
    return build_tiny_repository(tmp_path_factory.mktemp("client_tiny"))


@pytest.fixture(scope="module")
def server(repository):
    from magnet_triton.server import TritonServer

    with TritonServer(repository, log_path=repository.parent / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with MagnetClient(server.grpc_url, retry_backoff_s=0.1) as c:
        yield c


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return scene()


@pytest.fixture(scope="module")
def expected(server, image) -> np.ndarray:
    return raw_segmentation(server.grpc_url, image)


# ---------------------------------------------------------------------- a light import
def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_the_client_pulls_in_no_heavy_library():
    heavy = ("torch", "onnx", "onnxruntime", "cv2", "tensorrt", "pycuda", "tritonclient")
    run = _python(f"import sys, magnet_triton.client; print([m for m in {heavy!r} if m in sys.modules])")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_without_tritonclient_the_package_imports_and_the_client_says_what_to_install():
    run = _python(
        "import sys; sys.modules['tritonclient'] = None\n"
        "import magnet_triton.client as c\n"
        "try:\n    c.MagnetClient()\nexcept c.DependencyMissingError as e:\n    print(e)"
    )
    assert run.returncode == 0, run.stderr
    assert "pip install 'magnet-triton[client]'" in run.stdout


# ---------------------------------------------------------------------- validation before sending
BAD_IMAGES = {
    "float array": (scene(20, 20).astype(np.float32) / 255, r"got float32 .* \* 255"),
    "int64 array": (scene(20, 20).astype(np.int64), "uint8"),
    "grey array": (scene(20, 20)[:, :, 0].copy(), "np.repeat"),
    "rgba array": (np.zeros((20, 20, 4), np.uint8), "drop alpha"),
    "empty array": (np.zeros((0, 20, 3), np.uint8), "no pixels"),
    "empty bytes": (b"", "empty"),
    "missing file": (Path("/nonexistent/photo.png"), "no such image file"),
    "a list": ([[1, 2, 3]], "numpy array"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_a_bad_image_is_refused_before_sending_with_what_to_do(case):
    bad, hint = BAD_IMAGES[case]
    with offline_client() as client, pytest.raises(BadRequestError, match=hint) as error:
        client.segment(bad)
    assert error.value.attempts == 0


def test_a_folder_and_an_empty_file_are_refused(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with offline_client() as client:
        with pytest.raises(BadRequestError, match="is a folder"):
            client.segment(tmp_path)
        with pytest.raises(BadRequestError, match="empty"):
            client.segment(tmp_path / "empty.png")


@pytest.mark.parametrize(
    ("overrides", "hint"),
    [
        ({"mode": "turbo"}, "unknown mode 'turbo'"),
        ({"patch_order": "random"}, "unknown patch_order"),
        ({"n_points": float("nan")}, "n_points"),
        ({"n_points": -3}, "n_points"),
        ({"n_patches": -5}, "n_patches"),
        ({"n_patches": 1.5}, "whole number"),
        ({"via_shared_memory": True, "via_cuda_shared_memory": True}, "not both"),
    ],
)
def test_a_bad_override_is_refused_before_sending(overrides, hint):
    with offline_client() as client, pytest.raises(BadRequestError, match=hint):
        client.segment(scene(20, 20), **overrides)


@pytest.mark.parametrize(
    ("url", "hint"), [("http://127.0.0.1:8000", "gRPC"), ("localhost", "host:port"), ("h:99999", "host:port")]
)
def test_a_bad_url_is_refused_with_the_expected_form(url, hint):
    with pytest.raises(BadRequestError, match=hint):
        MagnetClient(url)


def test_options_are_keyword_only_and_checked():
    with pytest.raises(TypeError):
        MagnetClient("127.0.0.1:8001", 5.0)  # type: ignore[misc]
    with pytest.raises(BadRequestError, match="timeout_s"):
        MagnetClient(timeout_s=0)
    with pytest.raises(BadRequestError, match="retries"):
        MagnetClient(retries=-1)
    assert MagnetClient("grpc://127.0.0.1:8001").url == "127.0.0.1:8001"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine can make CUDA regions")
def test_cuda_shared_memory_without_a_gpu_is_a_clear_error():
    with offline_client() as client, pytest.raises((DependencyMissingError, SharedMemoryError), match="CUDA"):
        client.segment(scene(20, 20), via_cuda_shared_memory=True)


# ---------------------------------------------------------------------- errors and retries (no server)
def test_a_closed_port_is_a_connection_error_that_names_the_url_and_the_fix(caplog):
    client = offline_client(retries=1, retry_backoff_s=0.05)
    with client, caplog.at_level(logging.WARNING), pytest.raises(ConnectionFailedError) as error:
        client.segment(scene(20, 20))
    assert error.value.attempts == 2
    assert client.url in str(error.value) and "magnet-triton serve --model-repository" in str(error.value)
    assert "retrying" in caplog.text


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("StatusCode.UNAVAILABLE", ConnectionFailedError),
        ("StatusCode.DEADLINE_EXCEEDED", RequestTimeoutError),
        ("StatusCode.INVALID_ARGUMENT", BadRequestError),
        ("StatusCode.INTERNAL", ServerError),
        ("StatusCode.NOT_FOUND", ServerError),
        (None, ServerError),
    ],
)
def test_tritonclient_errors_map_to_one_class_per_status(status, kind):
    from tritonclient.utils import InferenceServerException

    error = from_triton(
        InferenceServerException("boom", status=status), url="h:1", model_name="magnet", attempts=1
    )
    assert type(error) is kind and "boom" in str(error)


# Triton 2.51's own words (seen in the soak's fault windows and queue tests), and what each means.
@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        ("StatusCode.UNAVAILABLE", "in ensemble 'magnet', Exceeds maximum queue size", ServerBusyError),
        ("StatusCode.UNAVAILABLE", "Request timeout expired", ServerBusyError),
        (
            "StatusCode.NOT_FOUND",
            "Request for unknown model: 'magnet' has no available versions",
            ModelRecoveringError,
        ),
        ("StatusCode.INTERNAL", "Stub process 'magnet_pipeline_0_1' is not healthy.", ModelRecoveringError),
        (
            "StatusCode.UNAVAILABLE",
            "magnet_backbone (version 1) failed: Stub process 'magnet_backbone_0_0' is not healthy.",
            ModelRecoveringError,
        ),
        ("StatusCode.NOT_FOUND", "Request for unknown model: 'magnett' is not found", ServerError),
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", ConnectionFailedError),
        ("StatusCode.INTERNAL", "RuntimeError: out of memory", ServerError),
    ],
)
def test_a_busy_or_recovering_server_is_told_apart_from_a_missing_model_or_a_failure(status, message, kind):
    from tritonclient.utils import InferenceServerException

    error = from_triton(
        InferenceServerException(message, status=status), url="h:1", model_name="magnet", attempts=1
    )
    assert type(error) is kind and message in str(error)
    retried = kind in (ServerBusyError, ModelRecoveringError, ConnectionFailedError)
    assert RetryPolicy(retries=1).should_retry(error, attempt=1) is retried


def test_backoff_doubles_up_to_the_cap_and_bad_requests_and_timeouts_are_not_retried():
    policy = RetryPolicy(retries=5, backoff_s=0.5, max_backoff_s=3.0)
    assert [policy.delay_s(i) for i in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.should_retry(ConnectionFailedError("x", status="UNAVAILABLE"), attempt=1)
    assert not policy.should_retry(ConnectionFailedError("x", status="UNAVAILABLE"), attempt=6)
    assert not policy.should_retry(BadRequestError("x", status="INVALID_ARGUMENT"), attempt=1)
    assert not policy.should_retry(RequestTimeoutError("x", status="DEADLINE_EXCEEDED"), attempt=1)


# ---------------------------------------------------------------------- pure result helpers
def test_server_timings_are_the_difference_of_two_statistics_snapshots():
    def snapshot(count: int, infer_ns: int) -> dict:
        stats = {
            "success": {"count": str(count)},
            "compute_infer": {"ns": str(infer_ns)},
            "queue": {"ns": "1000"},
        }
        return {"model_stats": [{"name": "magnet_pipeline", "version": "1", "inference_stats": stats}]}

    delta = statistics_delta(snapshot(2, 3_000_000_000), snapshot(3, 3_500_000_000))
    assert delta == {
        "magnet_pipeline": {
            "requests": 1,
            "queue_s": 0.0,
            "compute_input_s": 0.0,
            "compute_infer_s": 0.5,
            "compute_output_s": 0.0,
        }
    }
    assert statistics_delta(snapshot(3, 1), snapshot(3, 1)) == {}


def test_health_groups_versions_by_model():
    index = {
        "models": [
            {"name": "magnet_refiner", "version": "1", "state": "READY"},
            {"name": "magnet_refiner", "version": "2", "state": "UNAVAILABLE", "reason": "oom"},
            {"name": "magnet", "version": "1", "state": "READY"},
        ]
    }
    health = summarize_health(url="h:1", live=True, ready=False, metadata={"version": "2.51.0"}, index=index)
    assert health["server"]["version"] == "2.51.0" and health["ready"] is False
    assert health["models"]["magnet_refiner"] == {
        "ready": True,
        "versions": {"1": "READY", "2": "UNAVAILABLE"},
        "reason": "oom",
    }
    assert list(health["models"]) == ["magnet", "magnet_refiner"]


# ---------------------------------------------------------------------- palettes and overlays
def test_the_cityscapes_palette_has_the_19_train_id_colours():
    assert CITYSCAPES.shape == (19, 3) and CITYSCAPES.dtype == np.uint8
    assert CITYSCAPES[0].tolist() == [128, 64, 128]  # road
    assert CITYSCAPES[10].tolist() == [70, 130, 180]  # sky
    assert CITYSCAPES[18].tolist() == [119, 11, 32]  # bicycle
    assert len({tuple(c) for c in CITYSCAPES.tolist()}) == 19


def test_the_deepglobe_palette_has_its_7_land_cover_colours_in_order():
    assert DEEPGLOBE.tolist() == [
        [0, 255, 255],
        [255, 255, 0],
        [255, 0, 255],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 255],
        [0, 0, 0],
    ]


def test_the_generic_palette_is_the_voc_colour_map_with_distinct_colours():
    palette = generic_palette(256)
    assert palette[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert len({tuple(c) for c in palette.tolist()}) == 256
    assert not palette.flags.writeable


def test_auto_picks_the_palette_by_class_count():
    assert get_palette("auto", 19) is CITYSCAPES
    assert get_palette("auto", 7) is DEEPGLOBE
    assert get_palette("auto", 5).shape == (5, 3)
    with pytest.raises(MagnetError, match="unknown palette"):
        get_palette("rainbow")


def test_overlay_blends_by_alpha_and_rounds():
    image = np.full((2, 3, 3), 100, np.uint8)
    class_map = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    colours = colorize(class_map, DEEPGLOBE)
    assert colours[0, 1].tolist() == [255, 255, 0]
    np.testing.assert_array_equal(overlay(image, class_map, DEEPGLOBE, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, class_map, DEEPGLOBE, alpha=1.0), colours)
    half = overlay(image, class_map, DEEPGLOBE, alpha=0.5)
    assert half.dtype == np.uint8 and half[0, 1].tolist() == [178, 178, 50]  # (100 + 255) / 2 = 177.5 -> 178


def test_overlay_refuses_mismatched_sizes_classes_without_colour_and_bad_alpha():
    image, class_map = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)
    with pytest.raises(MagnetError, match="4x5"):
        overlay(np.zeros((4, 5, 3), np.uint8), class_map, DEEPGLOBE)
    with pytest.raises(MagnetError, match=r"palette has colours for 0\.\.6"):
        overlay(image, class_map + 7, DEEPGLOBE)
    with pytest.raises(MagnetError, match="alpha"):
        overlay(image, class_map, DEEPGLOBE, alpha=1.5)


def test_write_overlay_writes_an_rgb_png_of_the_image_size(tmp_path):
    from PIL import Image

    path = write_overlay(tmp_path / "sub" / "x.png", scene(30, 40), np.zeros((30, 40), np.uint8), "generic")
    with Image.open(path) as written:
        assert written.size == (40, 30) and written.mode == "RGB"


def test_the_progress_bar_draws_only_when_enabled():
    stream = io.StringIO()
    with ProgressBar(4, stream=stream, enabled=True, width=8) as bar:
        bar.update()
        bar.update()
    assert "[####....] 2/4  50%" in stream.getvalue()
    quiet = io.StringIO()
    with ProgressBar(4, stream=quiet) as bar:  # a StringIO is not a terminal
        bar.update()
    assert quiet.getvalue() == ""


# ---------------------------------------------------------------------- command line (no server)
def test_cli_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["segment", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "exit status" in out and "3  could not connect" in out


def test_cli_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exited:
        cli.main(["segment", "x.png"])  # --out is required
    assert exited.value.code == cli.EXIT_USAGE


def test_cli_a_missing_file_exits_1(tmp_path, capsys):
    status = cli.main(["segment", str(tmp_path / "nope.png"), "--url", closed_url(), "--out", str(tmp_path)])
    assert status == cli.EXIT_BAD_REQUEST
    assert "no such image file" in capsys.readouterr().err


def test_cli_a_bad_override_exits_1_once(tmp_path, capsys):
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(scene(20, 20)))
    args = [
        "segment",
        str(path),
        str(path),
        "--out",
        str(tmp_path / "o"),
        "--url",
        closed_url(),
        "--n-points",
        "-1",
    ]
    assert cli.main(args) == cli.EXIT_BAD_REQUEST
    assert capsys.readouterr().err.count("n_points") == 1


def test_cli_two_inputs_with_one_stem_exit_1(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.png").write_bytes(png_bytes(scene(20, 20)))
    args = [
        "segment",
        str(tmp_path / "a" / "x.png"),
        str(tmp_path / "b" / "x.png"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert cli.main([*args, "--url", closed_url()]) == cli.EXIT_BAD_REQUEST


def test_cli_a_closed_port_exits_3(tmp_path, capsys):
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(scene(20, 20)))
    args = ["segment", str(path), "--out", str(tmp_path / "o"), "--url", closed_url()]
    assert cli.main([*args, "--retries", "0"]) == cli.EXIT_CONNECTION
    assert "is the server running" in capsys.readouterr().err
    assert cli.main(["health", "--url", closed_url(), "--retries", "0"]) == cli.EXIT_CONNECTION


# ---------------------------------------------------------------------- against a real server
@pytest.mark.server
def test_arrays_bytes_and_paths_give_the_same_class_map(client, image, expected, tmp_path):
    path = tmp_path / "scene.png"
    path.write_bytes(png_bytes(image))
    by_array = client.segment(image)
    assert by_array.model_name == io_spec.PIPELINE_MODEL
    assert by_array.segmentation.dtype == np.uint8 and by_array.segmentation.shape == image.shape[:2]
    assert by_array.confidence.dtype == np.float32 and by_array.coarse_segmentation.shape == image.shape[:2]
    assert by_array.latency_s > 0 and by_array.attempts == 1
    np.testing.assert_array_equal(by_array.segmentation, expected)
    for source in (png_bytes(image), path, str(path)):
        result = client.segment(source)
        assert result.model_name == io_spec.ENSEMBLE_MODEL
        np.testing.assert_array_equal(result.segmentation, expected)
        np.testing.assert_array_equal(result.confidence, by_array.confidence)


@pytest.mark.server
def test_system_shared_memory_gives_the_same_result_as_plain_grpc(client, image, expected, tmp_path):
    before = set(Path("/dev/shm").glob("magnet_client_*"))
    result = client.segment(image, via_shared_memory=True)
    np.testing.assert_array_equal(result.segmentation, expected)
    path = tmp_path / "scene.png"
    path.write_bytes(png_bytes(image))
    np.testing.assert_array_equal(client.segment(path, via_shared_memory=True).segmentation, expected)
    assert set(Path("/dev/shm").glob("magnet_client_*")) == before, "a region was left behind"
    with grpc.InferenceServerClient(client.url) as raw:
        assert raw.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}


@pytest.mark.server
def test_overrides_reach_the_server(client, image):
    downsample = client.segment(image, mode="downsample")
    np.testing.assert_array_equal(downsample.segmentation, downsample.coarse_segmentation)
    assert not np.array_equal(client.segment(image).segmentation, downsample.segmentation)


@pytest.mark.server
def test_a_request_the_server_rejects_is_a_bad_request_and_is_not_retried(client, caplog):
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(BadRequestError, match="IMAGE_BYTES input is") as error,
    ):
        client.segment(b"definitely not a PNG")
    assert error.value.attempts == 1 and error.value.status == "INVALID_ARGUMENT"
    assert "retrying" not in caplog.text
    with pytest.raises(BadRequestError, match="limit of 360000") as error:
        client.segment(np.zeros((700, 700, 3), np.uint8))
    assert error.value.attempts == 1


@pytest.mark.server
def test_a_request_past_its_timeout_is_a_timeout_error_and_is_not_retried(server, image):
    with MagnetClient(server.grpc_url, timeout_s=0.001) as hasty, pytest.raises(RequestTimeoutError) as error:
        hasty.segment(image)
    assert error.value.attempts == 1 and "--timeout-s" in str(error.value)


@pytest.mark.server
def test_a_call_waits_through_retries_for_a_server_that_comes_up_late(repository, image, expected, caplog):
    from magnet_triton.server import TritonServer

    port = free_port()
    late = MagnetClient(f"127.0.0.1:{port}", retries=40, retry_backoff_s=0.2, retry_max_backoff_s=1.0)
    with late, caplog.at_level(logging.WARNING), ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(late.segment, image)
        time.sleep(2.0)
        assert not pending.done(), "nothing listens yet, so the call must still be retrying"
        with TritonServer(repository, grpc_port=port, log_path=repository.parent / "late.log"):
            result = pending.result(timeout=120)
    assert result.attempts > 1
    assert caplog.text.count("retrying in") == result.attempts - 1
    np.testing.assert_array_equal(result.segmentation, expected)


@pytest.mark.server
def test_segment_many_keeps_input_order_and_reports_progress(client, server):
    images = [scene(90, 110, seed=s) for s in range(4)]
    expected = [raw_segmentation(server.grpc_url, im) for im in images]
    seen: list[tuple[int, int]] = []
    results = client.segment_many(images, max_concurrency=3, progress=lambda d, t: seen.append((d, t)))
    for result, want in zip(results, expected):
        np.testing.assert_array_equal(result.segmentation, want)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    mixed = client.segment_many([images[0], b"", images[1]], return_exceptions=True)
    assert isinstance(mixed[1], BadRequestError)
    np.testing.assert_array_equal(mixed[2].segmentation, expected[1])
    with pytest.raises(BadRequestError):
        client.segment_many([images[0], b""])


@pytest.mark.server
def test_the_async_client_gives_the_sync_clients_maps_in_order(client, server):
    images = [scene(90, 110, seed=s) for s in range(3)]
    sync = client.segment_many(images)

    async def run():
        async with AsyncMagnetClient(server.grpc_url) as aclient:
            one = await aclient.segment(png_bytes(images[0]), mode="magnet")
            many = await aclient.segment_many(images, max_concurrency=2)
            shm = await aclient.segment(images[2], via_shared_memory=True)
            health = await aclient.health()
            with pytest.raises(BadRequestError):
                await aclient.segment_many([images[0], np.zeros((5, 5), np.uint8)])
            return one, many, shm, health

    one, many, shm, health = asyncio.run(run())
    np.testing.assert_array_equal(one.segmentation, sync[0].segmentation)
    for a, s in zip(many, sync):
        np.testing.assert_array_equal(a.segmentation, s.segmentation)
    np.testing.assert_array_equal(shm.segmentation, sync[2].segmentation)
    assert health["ready"]


@pytest.mark.server
def test_health_lists_every_model_and_version(client):
    health = client.health()
    assert health["live"] and health["ready"] and health["server"]["version"]
    assert health["models"][io_spec.ENSEMBLE_MODEL]["ready"]
    assert health["models"][io_spec.DEFAULT_NAMES.refiner(1)]["versions"] == {"1": "READY"}
    assert client.num_classes() == 5


@pytest.mark.server
def test_server_timings_cover_the_pipeline_when_asked(server, image):
    with MagnetClient(server.grpc_url, collect_server_timings=True) as timed:
        result = timed.segment(image)
    assert result.server_timings[io_spec.PIPELINE_MODEL]["compute_infer_s"] > 0
    assert result.server_timings[io_spec.BACKBONE_MODEL]["requests"] >= 1


@pytest.mark.server
@pytest.mark.parametrize("transport", [[], ["--raw"], ["--shared-memory"]])
def test_cli_writes_the_class_maps_grpc_returns_and_overlays(server, tmp_path, transport):
    from PIL import Image

    from magnet_triton.imageio import read_class_map

    images = {f"img{i}": scene(60 + 10 * i, 80, seed=20 + i) for i in range(2)}
    paths = []
    for stem, pixels in images.items():
        paths.append(tmp_path / f"{stem}.png")
        paths[-1].write_bytes(png_bytes(pixels))
    out = tmp_path / "out"
    args = ["segment", *map(str, paths), "--url", server.grpc_url, "--out", str(out), "--overlay", "-q"]
    assert cli.main([*args, *transport]) == cli.EXIT_OK
    for stem, pixels in images.items():
        np.testing.assert_array_equal(
            read_class_map(out / f"{stem}.png"), raw_segmentation(server.grpc_url, pixels)
        )
        with Image.open(out / f"{stem}_overlay.png") as written:
            assert written.size == (pixels.shape[1], pixels.shape[0]) and written.mode == "RGB"


@pytest.mark.server
def test_cli_a_corrupt_file_exits_1_and_the_good_ones_are_written(server, tmp_path, capsys):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(png_bytes(scene(40, 40)))
    bad.write_bytes(b"not an image")
    status = cli.main(
        ["segment", str(good), str(bad), "--url", server.grpc_url, "--out", str(tmp_path / "o")]
    )
    assert status == cli.EXIT_BAD_REQUEST
    assert (tmp_path / "o" / "good.png").is_file() and not (tmp_path / "o" / "bad.png").exists()
    captured = capsys.readouterr()
    assert "bad.png" in captured.err and "wrote 1 of 2" in captured.out


@pytest.mark.server
@pytest.mark.parametrize("transport", [[], ["--raw"]], ids=["encoded", "raw"])
def test_cli_a_file_declaring_a_huge_image_exits_1_without_a_traceback(server, tmp_path, capsys, transport):
    from magnet_triton.sample import png_declaring

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(30000, 30000))
    status = cli.main(
        ["segment", str(bomb), "--url", server.grpc_url, "--out", str(tmp_path / "o"), *transport]
    )
    assert status == cli.EXIT_BAD_REQUEST
    err = capsys.readouterr().err
    assert "bomb.png" in err and "declares 900000000 pixels, over the limit of" in err
    assert "Traceback" not in err


@pytest.mark.server
def test_cli_health_prints_readiness_and_versions(server, capsys):
    assert cli.main(["health", "--url", server.grpc_url]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "ready: yes" in out and "2.51" in out and "magnet_refiner_2" in out and "v1 READY" in out


def test_every_client_error_has_an_exit_code():
    assert cli.exit_code(BadRequestError("x")) == 1
    assert cli.exit_code(ConnectionFailedError("x")) == 3
    assert cli.exit_code(RequestTimeoutError("x")) == 4
    assert cli.exit_code(ServerError("x")) == 5
    assert cli.exit_code(MagnetClientError("x")) == 1


def test_timings_wait_for_every_step_of_the_ensemble_to_be_counted():
    from magnet_triton.client.result import timings_complete

    counted = {"requests": 1, "compute_infer_s": 0.1}
    two_steps = {io_spec.ENSEMBLE_MODEL: counted, io_spec.DECODE_MODEL: counted}
    assert not timings_complete(two_steps, io_spec.ENSEMBLE_MODEL)
    assert timings_complete({**two_steps, io_spec.PIPELINE_MODEL: counted}, io_spec.ENSEMBLE_MODEL)
    assert timings_complete({io_spec.PIPELINE_MODEL: counted}, io_spec.PIPELINE_MODEL)


def test_the_client_sends_its_timeout_as_the_pipelines_deadline_rounded_up():
    from magnet_triton.client.base import ClientOptions

    def sent(timeout_s):
        return ClientOptions("h:1", timeout_s, RetryPolicy(retries=0)).infer_kwargs().get("parameters")

    # The server stops a request once deadline_ms passes; rounding down would stop it early.
    assert sent(2.0001) == {io_spec.DEADLINE_PARAMETER: 2001}
    assert sent(0.0001) == {io_spec.DEADLINE_PARAMETER: 1}
    assert sent(None) is None


def test_the_client_names_the_outputs_it_asks_for_in_a_parameter_the_ensemble_passes_on():
    from magnet_triton.client.base import ClientOptions
    from magnet_triton.client.request import check_outputs

    options = ClientOptions("h:1", None, RetryPolicy(retries=0))
    alone = options.infer_kwargs(check_outputs(()))["parameters"]
    assert alone == {io_spec.OUTPUTS_PARAMETER: f"{io_spec.SEGMENTATION},{io_spec.SCALES_DONE}"}
    confidence = options.infer_kwargs(check_outputs(["confidence"]))["parameters"][io_spec.OUTPUTS_PARAMETER]
    assert set(confidence.split(",")) == {io_spec.SEGMENTATION, io_spec.SCALES_DONE, io_spec.CONFIDENCE}
    assert "parameters" not in options.infer_kwargs(None)  # every output: nothing to say


def test_a_deadline_shorter_than_the_timeout_is_the_budget_sent_and_a_bad_one_is_refused():
    from magnet_triton.client.base import ClientOptions

    def sent(timeout_s, deadline_s):
        options = ClientOptions("h:1", timeout_s, RetryPolicy(retries=0), deadline_s=deadline_s)
        return options.infer_kwargs()["parameters"][io_spec.DEADLINE_PARAMETER]

    assert sent(300.0, 2.5) == 2500
    assert sent(300.0, None) == 300_000
    assert sent(None, 1.2) == 1200
    assert sent(1.0, 5.0) == 1000  # past its own timeout the client is gone: no use refining longer
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(BadRequestError, match="deadline_s must be a number of seconds > 0"):
            ClientOptions("h:1", 300.0, RetryPolicy(retries=0), deadline_s=bad)


def test_the_client_addresses_the_preset_behind_its_model_and_sends_version_priority_and_queue_timeout():
    from magnet_triton.client.base import make_options

    def options(**changes):
        base = dict(timeout_s=10.0, retries=0, retry_backoff_s=0.1, retry_max_backoff_s=1.0)
        return make_options("127.0.0.1:8001", **{**base, **changes})

    plain = options()
    assert plain.names == io_spec.DEFAULT_NAMES and plain.request_kwargs() == {}
    chosen = options(model="deepglobe_magnet", model_version=2, priority=1, server_timeout_s=0.25)
    assert chosen.names.pipeline == "deepglobe_magnet_pipeline"
    assert chosen.request_kwargs() == {"model_version": "2", "priority": 1, "timeout": 250_000}
    assert chosen.infer_kwargs()["priority"] == 1
    with pytest.raises(BadRequestError, match="not a MagNet entry point"):
        options(model="magnet_backbone")
    with pytest.raises(BadRequestError, match="priority must be a whole number >= 0"):
        options(priority=-1)
