"""The pipeline's queue on a real tritonserver: a full queue and a queue timeout answer UNAVAILABLE.

One server for the module, from a tiny repository with one pipeline instance and room for one waiting
request, so a slow request running and one waiting fill it. Which state the server is in is read from
the server (its statistics and ``/metrics``), never assumed from how long work takes.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from magnet_triton import io_spec
from magnet_triton.model_repository.pipeline_metrics import FAMILY
from tests.server_metrics import read_metrics, sample, wait_until
from tests.tiny_repository import scene, serving_tiny_repository

pytestmark = pytest.mark.server
grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

#: Seconds of work for the tiny model on two cores (its final maps are at the image's 2.8 MP): long
#: enough that the steps below happen while it runs.
SLOW_IMAGE = scene(1400, 2000, seed=5)
QUEUE_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving_tiny_repository(
        tmp_path_factory.mktemp("queue"),
        max_image_pixels=SLOW_IMAGE.shape[0] * SLOW_IMAGE.shape[1],
        pipeline_instances=1,
        max_queue_size=1,
        queue_timeout_ms=QUEUE_TIMEOUT_MS,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with grpc.InferenceServerClient(server.grpc_url) as c:
        yield c


def image_input(image: np.ndarray) -> Any:
    t = grpc.InferInput(io_spec.IMAGE, list(image.shape), "UINT8")
    t.set_data_from_numpy(image)
    return t


class Answers:
    """Replies of ``async_infer`` calls by name: the result, or the InferenceServerException."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.replies: dict[str, Any] = {}

    def to(self, name: str):
        def callback(result: Any, error: Any) -> None:
            with self._lock:
                self.replies[name] = error if error is not None else result

        return callback

    def has(self, *names: str) -> bool:
        with self._lock:
            return all(name in self.replies for name in names)


def _backbone_executions(client) -> int:
    stats = client.get_inference_statistics(io_spec.BACKBONE_MODEL, as_json=True)["model_stats"][0]
    return int(stats.get("execution_count", 0))


def _pipeline_executions(client) -> int:
    stats = client.get_inference_statistics(io_spec.PIPELINE_MODEL, as_json=True)["model_stats"][0]
    return int(stats.get("execution_count", 0))


def _queued(server) -> float:
    samples = read_metrics(server.metrics_url)
    return sample(samples, "nv_inference_pending_request_count", model=io_spec.PIPELINE_MODEL, version="1")


def _failures(server) -> dict[str, float]:
    """Triton's ``nv_inference_request_failure`` of the pipeline, by reason."""
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in read_metrics(server.metrics_url).items()
        if name == "nv_inference_request_failure" and dict(labels)["model"] == io_spec.PIPELINE_MODEL
    }


def _succeeded(server) -> float:
    return sample(read_metrics(server.metrics_url), FAMILY, outcome="success")


def _run_slow_request(client, answers: Answers) -> None:
    """Send the slow request and return once it runs on the pipeline's one instance: the pipeline has
    called the backbone for it (its coarse pass), with every refinement scale still to go."""
    calls = _backbone_executions(client)
    client.async_infer(io_spec.PIPELINE_MODEL, [image_input(SLOW_IMAGE)], answers.to("running"))
    wait_until(lambda: _backbone_executions(client) > calls, "the slow request reaching the backbone")


def test_a_request_beyond_the_full_queue_is_refused_at_once_as_unavailable(client, server):
    failures = _failures(server)
    answers = Answers()
    _run_slow_request(client, answers)
    client.async_infer(io_spec.PIPELINE_MODEL, [image_input(scene(40, 50))], answers.to("waiting"))
    wait_until(lambda: _queued(server) == 1, "the second request waiting in the queue")
    with pytest.raises(grpc.InferenceServerException) as error:
        client.infer(io_spec.PIPELINE_MODEL, [image_input(scene(40, 50))])
    assert not answers.has("running"), "the refusal should come at once, while the slow request runs"
    assert error.value.status() == "StatusCode.UNAVAILABLE", error.value
    assert "Exceeds maximum queue size" in error.value.message()
    wait_until(lambda: answers.has("running", "waiting"), "the running and the waiting request's replies")
    for name in ("running", "waiting"):
        assert not isinstance(answers.replies[name], Exception), answers.replies[name]
    assert answers.replies["waiting"].as_numpy(io_spec.SEGMENTATION).shape == (40, 50)
    # Triton 2.51 counts this refusal nowhere (the README says so): not even as a failure.
    assert _failures(server) == failures


def test_a_request_queued_past_its_timeout_is_answered_unavailable_and_never_runs(client, server):
    executions, succeeded = _pipeline_executions(client), _succeeded(server)
    rejected = _failures(server)["REJECTED"]
    answers = Answers()
    _run_slow_request(client, answers)
    # 1 ms, below the repository's 60 s: a request may shorten the queue timeout for itself.
    client.async_infer(
        io_spec.PIPELINE_MODEL, [image_input(scene(40, 50))], answers.to("waiting"), timeout=1000
    )
    wait_until(lambda: answers.has("running", "waiting"), "both replies")
    timed_out = answers.replies["waiting"]
    assert isinstance(timed_out, grpc.InferenceServerException), "the waiting request should time out"
    assert timed_out.status() == "StatusCode.UNAVAILABLE", timed_out
    assert "Request timeout expired" in timed_out.message()
    assert not isinstance(answers.replies["running"], Exception), answers.replies["running"]
    # Only the slow request ran: the timed-out one never reached the pipeline.
    wait_until(lambda: _pipeline_executions(client) >= executions + 1, "the slow request's statistics")
    assert _pipeline_executions(client) == executions + 1
    assert _succeeded(server) == succeeded + 1
    # Triton counts the timeout itself, as REJECTED (the pipeline never saw the request).
    wait_until(lambda: _failures(server)["REJECTED"] >= rejected + 1, "Triton counting the timeout")
    assert _failures(server)["REJECTED"] == rejected + 1
