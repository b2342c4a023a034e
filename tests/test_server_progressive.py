"""``magnet_pipeline_progressive`` against a real server: one response per stage over a gRPC stream,
the last equal to the pipeline's answer, and a cancelled stream ending the server's work early.

Expected maps come from plain (non-streamed) tritonclient calls to ``magnet_pipeline``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from magnet_triton import io_spec
from magnet_triton.client import BadRequestError, MagnetClient, cli
from tests.tiny_repository import TINY, build_tiny_repository, png_bytes, scene, skip_without_tritonserver

pytestmark = pytest.mark.server
grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from magnet_triton.server import TritonServer

    skip_without_tritonserver()
    repository = build_tiny_repository(tmp_path_factory.mktemp("progressive"), progressive=True)
    with TritonServer(repository, log_path=repository.parent / "server.log") as running:
        yield running


def pipeline_map(url: str, image: np.ndarray, **parameters) -> np.ndarray:
    with grpc.InferenceServerClient(url) as raw:
        tensor = grpc.InferInput(io_spec.IMAGE, list(image.shape), "UINT8")
        tensor.set_data_from_numpy(image)
        mode = grpc.InferInput(io_spec.MODE, [1], "BYTES")
        mode.set_data_from_numpy(np.array([parameters.get("mode", "magnet").encode()], dtype=np.object_))
        return raw.infer(io_spec.PIPELINE_MODEL, [tensor, mode]).as_numpy(io_spec.SEGMENTATION)


def progressive_stats(url: str) -> tuple[int, float]:
    """(requests done, compute seconds) of the progressive model, from Triton's statistics."""
    with grpc.InferenceServerClient(url) as raw:
        stats = raw.get_inference_statistics(io_spec.PROGRESSIVE_MODEL, as_json=True)["model_stats"][0]
    infer = stats["inference_stats"]
    return int(infer.get("success", {}).get("count", 0)), int(
        infer.get("compute_infer", {}).get("ns", 0)
    ) / 1e9


def wait_for_count(url: str, count: int) -> float:
    deadline = time.monotonic() + 60
    while (current := progressive_stats(url))[0] < count:
        assert time.monotonic() < deadline, f"the progressive model finished {current[0]} of {count} requests"
        time.sleep(0.05)
    return current[1]


def test_the_stream_gives_each_stage_and_ends_with_the_pipelines_answer(server):
    image = scene(90, 130, seed=11)
    with MagnetClient(server.grpc_url) as client:
        stages = list(client.segment_progressive(image))
    assert [s.scales_done for s in stages] == list(range(1, TINY.num_scales + 1))
    assert all(s.model_name == io_spec.PROGRESSIVE_MODEL and s.coarse_segmentation is None for s in stages)
    # The first stage is the coarse pass resized: what mode downsample answers.
    np.testing.assert_array_equal(
        stages[0].segmentation, pipeline_map(server.grpc_url, image, mode="downsample")
    )
    np.testing.assert_array_equal(stages[-1].segmentation, pipeline_map(server.grpc_url, image))
    assert not np.array_equal(stages[0].segmentation, stages[-1].segmentation)


def test_a_stream_cancelled_after_its_first_stage_ends_the_servers_work_early(server):
    image = scene(500, 700, seed=3)
    url = server.grpc_url
    with MagnetClient(url, timeout_s=120) as client:
        count, _ = progressive_stats(url)
        list(client.segment_progressive(image))  # warm
        before = wait_for_count(url, count + 1)
        list(client.segment_progressive(image))
        full = wait_for_count(url, count + 2) - before
        stream = client.segment_progressive(image)
        first = next(stream)
        stream.close()  # the caller stops: the stream is cancelled
    assert first.scales_done == 1
    # The server finishes the cancelled request on its own time; it stops before its next scale.
    deadline = time.monotonic() + 60
    while True:
        done, total = progressive_stats(url)
        if done >= count + 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    stopped = total - before - full
    assert stopped < 0.6 * full, (stopped, full)


def test_a_bad_image_is_refused_through_the_stream_and_the_next_one_streams(server):
    with MagnetClient(server.grpc_url) as client:
        with pytest.raises(BadRequestError, match="over this server's limit"):
            list(client.segment_progressive(np.zeros((700, 700, 3), np.uint8)))
        assert len(list(client.segment_progressive(scene(40, 50)))) == TINY.num_scales


def test_the_cli_writes_each_stage_and_the_final_map(server, tmp_path):
    from magnet_triton.imageio import read_class_map

    image = scene(80, 100, seed=12)
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(image))
    out = tmp_path / "out"
    args = ["segment", str(path), "--url", server.grpc_url, "--out", str(out), "--progressive", "-q"]
    assert cli.main(args) == cli.EXIT_OK
    stages = sorted(p.name for p in out.iterdir())
    assert stages == ["x.png", *(f"x_stage{k}.png" for k in range(1, TINY.num_scales))]
    np.testing.assert_array_equal(read_class_map(out / "x.png"), pipeline_map(server.grpc_url, image))
    np.testing.assert_array_equal(
        read_class_map(out / "x_stage1.png"), pipeline_map(server.grpc_url, image, mode="downsample")
    )
