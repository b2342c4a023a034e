"""Two tritonserver replicas behind nginx (gRPC, L7): one is killed mid-stream and nothing is lost.

The bounded stream goes through one :class:`MagnetClient`, so one HTTP/2 connection: that both replicas
serve it is the point of an L7 balancer (an L4 one would pin the connection to one replica). Which
replica served what is read from each replica's own Prometheus metrics, never from timings.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from magnet_triton import io_spec
from tests.server_metrics import read_metrics, wait_until
from tests.tiny_repository import build_tiny_repository, png_bytes, scene, skip_without_tritonserver

pytestmark = [pytest.mark.server, pytest.mark.slow]
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

#: Distinct images (sizes and seeds), so a request answered with another's map would be caught.
IMAGES = [png_bytes(scene(48 + 8 * i, 72 + 12 * i, seed=i)) for i in range(6)]
REQUESTS = 36
CONCURRENCY = 3
#: Completed requests before the kill: both replicas have served by then, and most of the stream is left.
KILL_AFTER = 12


def _successes(metrics_url: str) -> float:
    """``nv_inference_request_success`` of the ``magnet`` ensemble on one replica."""
    return sum(
        value
        for (name, labels), value in read_metrics(metrics_url).items()
        if name == "nv_inference_request_success" and dict(labels).get("model") == io_spec.ENSEMBLE_MODEL
    )


@pytest.fixture(scope="module")
def balanced(tmp_path_factory):
    from benchmarks.balancer import balanced_replicas, find_nginx
    from magnet_triton.errors import MagnetError

    try:
        find_nginx()
    except MagnetError as e:
        pytest.skip(str(e))
    skip_without_tritonserver()
    root = tmp_path_factory.mktemp("replicas")
    repository = build_tiny_repository(root)
    with balanced_replicas(repository, root / "balancer", count=2) as running:
        yield running


def _direct_answers(server) -> list[np.ndarray]:
    from magnet_triton.client import MagnetClient

    with MagnetClient(server.grpc_url, retries=0) as client:
        return [client.segment(image, outputs=()).segmentation for image in IMAGES]


def test_a_replica_killed_mid_stream_loses_no_request_and_both_served(balanced):
    from magnet_triton.client import MagnetClient

    balancer, (survivor, victim) = balanced
    # The reference: each replica's own answers, which must agree (the same ONNX on the same CPU).
    expected = _direct_answers(survivor)
    for mine, theirs in zip(expected, _direct_answers(victim)):
        np.testing.assert_array_equal(mine, theirs)
    before = {s.grpc_url: _successes(s.metrics_url) for s in (survivor, victim)}

    done = threading.Condition()
    completed: list[float] = []  # monotonic time each request completed
    killed_at: list[float] = []

    def one(client: MagnetClient, i: int):
        result = client.segment(IMAGES[i % len(IMAGES)], outputs=())
        with done:
            completed.append(time.monotonic())
            done.notify_all()
        return i, result

    client = MagnetClient(balancer.url, timeout_s=60, retries=6, retry_backoff_s=0.2)
    with client, ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(one, client, i) for i in range(REQUESTS)]
        with done:
            assert done.wait_for(lambda: len(completed) >= KILL_AFTER, timeout=120), "stream stalled"
        victim_served = _successes(victim.metrics_url) - before[victim.grpc_url]
        os.kill(victim.pid, signal.SIGKILL)
        killed_at.append(time.monotonic())
        results = [f.result(timeout=180) for f in futures]  # any failed request raises here

    wait_until(lambda: not victim.is_running(), "the killed replica gone", timeout_s=10)
    for i, result in results:
        np.testing.assert_array_equal(result.segmentation, expected[i % len(IMAGES)], err_msg=f"request {i}")
    survivor_served = _successes(survivor.metrics_url) - before[survivor.grpc_url]
    after_kill = sum(t > killed_at[0] for t in completed)
    assert victim_served >= 1, "the balancer sent nothing to the second replica before the kill"
    # Everything answered after the kill came from the survivor (the victim may have finished a few
    # between the metrics read and the kill).
    assert survivor_served >= after_kill >= 1, (survivor_served, after_kill)
    upstreams = [line[0] for line in balancer.access_lines()]
    assert {survivor.grpc_url, victim.grpc_url} <= {u for line in upstreams for u in line.split(",")}
