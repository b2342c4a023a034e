"""The served pipeline: a real tritonserver (the bundled one) on free ports, a real gRPC client.

Every test talks to one server started for this module from a tiny CPU repository with random weights.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from magnet_triton import io_spec
from magnet_triton.model_repository.pipeline_metrics import FAMILY
from tests.server_metrics import read_metrics, sample, wait_until
from tests.tiny_repository import SEED, TINY, png_bytes, scene, serving_tiny_repository

pytestmark = pytest.mark.server
grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving_tiny_repository(tmp_path_factory.mktemp("tiny")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with grpc.InferenceServerClient(server.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def reference_networks():
    from magnet_triton.local import load_networks

    # The same seeded weights as the exported repository, in PyTorch.
    return load_networks(TINY, None, [], random_seed=SEED, max_batch=4)


def tensor(name: str, array: np.ndarray, dtype: str):
    t = grpc.InferInput(name, list(array.shape), dtype)
    t.set_data_from_numpy(array)
    return t


def overrides(**values):
    specs = {"MODE": "BYTES", "N_POINTS": "FP32", "N_PATCHES": "INT32", "PATCH_ORDER": "BYTES"}
    inputs = []
    for key, value in values.items():
        name = key.upper()
        if specs[name] == "BYTES":
            array = np.array([str(value).encode()], dtype=object)
        else:
            array = np.array([value], dtype=np.float32 if specs[name] == "FP32" else np.int32)
        inputs.append(tensor(name, array, specs[name]))
    return inputs


def segment(client, image: np.ndarray, **values):
    result = client.infer(
        io_spec.PIPELINE_MODEL, [tensor(io_spec.IMAGE, image, "UINT8"), *overrides(**values)]
    )
    return result.as_numpy(io_spec.SEGMENTATION), result.as_numpy(io_spec.COARSE_SEGMENTATION)


def assert_good_request_succeeds(client) -> None:
    segmentation, _ = segment(client, scene(40, 50), mode="downsample")
    assert segmentation.shape == (40, 50)


@pytest.mark.parametrize("mode", ["magnet", "magnet-fast", "downsample", "patching"])
def test_every_mode_matches_the_in_process_pipeline(client, reference_networks, mode):
    from magnet_triton.pipeline import run_magnet

    image = scene()
    served, served_coarse = segment(client, image, mode=mode)
    local = run_magnet(image, TINY.with_overrides(mode=mode), reference_networks)
    assert served.shape == image.shape[:2] and served.dtype == np.uint8
    # onnxruntime and PyTorch differ by ~1e-7 in the probabilities; that can flip a pixel whose two best
    # classes are tied to that precision, or a tied point of the top-k, and nothing else.
    assert (served == local.segmentation).mean() >= 0.999
    assert (served_coarse == local.coarse_segmentation).mean() >= 0.999
    assert len(np.unique(served)) > 1


def test_asking_for_the_segmentation_alone_returns_it_alone_and_unchanged(client):
    image = scene(seed=2)
    inputs = [tensor(io_spec.IMAGE, image, "UINT8"), *overrides(mode="magnet")]
    everything = client.infer(io_spec.PIPELINE_MODEL, inputs)
    alone = client.infer(
        io_spec.PIPELINE_MODEL, inputs, outputs=[grpc.InferRequestedOutput(io_spec.SEGMENTATION)]
    )
    returned = {output.name for output in alone.get_response().outputs}
    assert returned == {io_spec.SEGMENTATION}
    np.testing.assert_array_equal(
        alone.as_numpy(io_spec.SEGMENTATION), everything.as_numpy(io_spec.SEGMENTATION)
    )


def test_the_ensemble_decodes_png_bytes_like_the_raw_pipeline(client):
    image = scene(seed=1)
    raw, _ = segment(client, image, mode="magnet-fast")
    inputs = [tensor(io_spec.IMAGE_BYTES, np.array([png_bytes(image)], dtype=object), "BYTES")]
    encoded = client.infer(io_spec.ENSEMBLE_MODEL, inputs + overrides(mode="magnet-fast"))
    np.testing.assert_array_equal(encoded.as_numpy(io_spec.SEGMENTATION), raw)
    assert encoded.as_numpy(io_spec.CONFIDENCE).dtype == np.float32


def test_overrides_also_arrive_as_request_parameters(client):
    image = scene(seed=2)
    by_input, _ = segment(client, image, mode="downsample")
    result = client.infer(
        io_spec.PIPELINE_MODEL, [tensor(io_spec.IMAGE, image, "UINT8")], parameters={"mode": "downsample"}
    )
    np.testing.assert_array_equal(result.as_numpy(io_spec.SEGMENTATION), by_input)
    full, _ = segment(client, image)
    assert not np.array_equal(full, by_input), "the default (magnet) should differ from downsample here"


BAD_REQUESTS = {
    "float image": lambda: [tensor(io_spec.IMAGE, scene(20, 20).astype(np.float32), "FP32")],
    "rank 2 image": lambda: [tensor(io_spec.IMAGE, scene(20, 20)[:, :, 0].copy(), "UINT8")],
    "four channels": lambda: [tensor(io_spec.IMAGE, np.zeros((20, 20, 4), np.uint8), "UINT8")],
    "empty image": lambda: [tensor(io_spec.IMAGE, np.zeros((0, 20, 3), np.uint8), "UINT8")],
    "unknown mode": lambda: [tensor(io_spec.IMAGE, scene(20, 20), "UINT8"), *overrides(mode="turbo")],
    "NaN n_points": lambda: [
        tensor(io_spec.IMAGE, scene(20, 20), "UINT8"),
        *overrides(n_points=float("nan")),
    ],
    "negative n_points": lambda: [tensor(io_spec.IMAGE, scene(20, 20), "UINT8"), *overrides(n_points=-5)],
    "absurd n_points": lambda: [tensor(io_spec.IMAGE, scene(20, 20), "UINT8"), *overrides(n_points=1e30)],
    "negative n_patches": lambda: [tensor(io_spec.IMAGE, scene(20, 20), "UINT8"), *overrides(n_patches=-7)],
    "absurd n_patches": lambda: [tensor(io_spec.IMAGE, scene(20, 20), "UINT8"), *overrides(n_patches=2**30)],
    "unknown patch order": lambda: [
        tensor(io_spec.IMAGE, scene(20, 20), "UINT8"),
        *overrides(patch_order="x"),
    ],
    "image over the size limit": lambda: [tensor(io_spec.IMAGE, np.zeros((700, 700, 3), np.uint8), "UINT8")],
    "an override but no image": lambda: [*overrides(mode="downsample")],
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_bad_request_gets_a_clear_error_and_the_next_one_succeeds(client, case):
    with pytest.raises(grpc.InferenceServerException) as error:
        client.infer(io_spec.PIPELINE_MODEL, BAD_REQUESTS[case]())
    message = error.value.message()
    assert message and "Traceback" not in message
    # The caller's mistake, so clients know not to retry: never INTERNAL.
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT", (error.value.status(), message)
    assert_good_request_succeeds(client)


def test_a_misspelled_request_parameter_is_refused_listing_the_known_ones(client):
    with pytest.raises(grpc.InferenceServerException) as error:
        client.infer(
            io_spec.PIPELINE_MODEL,
            [tensor(io_spec.IMAGE, scene(20, 20), "UINT8")],
            parameters={"n_patchs": 2},
        )
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "unknown request parameter 'n_patchs'; known: mode, n_points, n_patches" in error.value.message()
    assert_good_request_succeeds(client)


def test_a_small_file_declaring_a_huge_image_is_refused_before_decoding(client):
    from magnet_triton.sample import png_declaring

    inputs = [tensor(io_spec.IMAGE_BYTES, np.array([png_declaring(30000, 30000)], dtype=object), "BYTES")]
    with pytest.raises(grpc.InferenceServerException) as error:
        client.infer(io_spec.ENSEMBLE_MODEL, inputs)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    # The decode step's limit is the pipeline's (the tiny repository's 600 x 600), not a fixed one.
    assert "declares 900000000 pixels, over the limit of 360000" in error.value.message()
    assert_good_request_succeeds(client)


@pytest.mark.parametrize("payload", [b"", b"definitely not a PNG", png_bytes(scene(30, 30))[:60]])
def test_corrupt_bytes_get_a_clear_error_from_the_ensemble(client, payload):
    inputs = [tensor(io_spec.IMAGE_BYTES, np.array([payload], dtype=object), "BYTES")]
    with pytest.raises(grpc.InferenceServerException, match="IMAGE_BYTES input is"):
        client.infer(io_spec.ENSEMBLE_MODEL, inputs)
    assert_good_request_succeeds(client)


def test_the_size_limit_error_names_the_limit(client):
    with pytest.raises(grpc.InferenceServerException, match="limit of 360000"):
        client.infer(io_spec.PIPELINE_MODEL, BAD_REQUESTS["image over the size limit"]())


def test_concurrent_requests_all_return_their_own_correct_result(client, server):
    images = [scene(seed=10 + i) for i in range(4)]
    expected = [segment(client, image, mode="magnet")[0] for image in images]

    def call(index: int) -> np.ndarray:
        with grpc.InferenceServerClient(server.grpc_url) as own:
            return segment(own, images[index], mode="magnet")[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(call, [0, 1, 2, 3, 0, 1, 2, 3]))
    for index, result in enumerate(results):
        np.testing.assert_array_equal(result, expected[index % 4])


def _pipeline_compute(client) -> tuple[int, float]:
    """(requests executed, seconds computing) of magnet_pipeline so far, from the server's statistics."""
    stats = client.get_inference_statistics(io_spec.PIPELINE_MODEL, as_json=True)["model_stats"][0]
    infer = stats["inference_stats"]["compute_infer"]
    return int(infer.get("count", 0)), int(infer.get("ns", 0)) / 1e9


def _wait_for_count(client, count: int) -> float:
    """Poll the pipeline's statistics (Triton records them after the reply) until ``count`` requests are
    counted; their total compute seconds."""
    deadline = time.monotonic() + 60
    while _pipeline_compute(client)[0] < count and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the server's own counter, not guessing how long the work takes
    done, seconds = _pipeline_compute(client)
    assert done == count, (done, count)
    return seconds


def _answered(server) -> dict[tuple[str, ...], float]:
    """The pipeline's own counters: (outcome[, reason]) -> requests so far."""
    return {
        tuple(v for _, v in sorted(labels)): value
        for (name, labels), value in read_metrics(server.metrics_url).items()
        if name == FAMILY
    }


def _triton_successes(server) -> float:
    return sample(
        read_metrics(server.metrics_url),
        "nv_inference_request_success",
        model=io_spec.PIPELINE_MODEL,
        version="1",
    )


def _increase(before: dict, after: dict) -> dict:
    assert set(after) == set(before), "the counters' series changed"
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def test_the_metrics_endpoint_counts_each_request_by_how_it_was_answered(client, server):
    before, triton_before = _answered(server), _triton_successes(server)
    assert ("success",) in before and ("refused", "over_work_cap") in before  # listed from load, at 0
    assert_good_request_succeeds(client)
    with pytest.raises(grpc.InferenceServerException, match="unknown request parameter 'n_patchs'"):
        client.infer(
            io_spec.PIPELINE_MODEL,
            [tensor(io_spec.IMAGE, scene(20, 20), "UINT8")],
            parameters={"n_patchs": 2},
        )
    with pytest.raises(grpc.InferenceServerException, match="limit of 360000"):
        client.infer(io_spec.PIPELINE_MODEL, BAD_REQUESTS["image over the size limit"]())
    # Triton records its own counters after the reply: wait for them before comparing ours.
    wait_until(lambda: _triton_successes(server) >= triton_before + 3, "Triton's counters of 3 requests")
    assert _increase(before, _answered(server)) == {
        ("success",): 1,
        ("refused", "unknown_parameter"): 1,
        ("refused", "over_limit"): 1,
    }
    # Why the pipeline counts for itself: Triton calls all three a success.
    assert _triton_successes(server) == triton_before + 3


def test_a_misspelled_parameter_through_the_ensemble_is_refused_by_the_decode_step(client, server):
    """Refused at the first step, at once: it never waits its turn in the pipeline's queue (so the
    pipeline, which would count it, never sees it)."""
    before = _answered(server)
    inputs = [tensor(io_spec.IMAGE_BYTES, np.array([png_bytes(scene(20, 20))], dtype=object), "BYTES")]
    with pytest.raises(grpc.InferenceServerException) as error:
        client.infer(io_spec.ENSEMBLE_MODEL, inputs, parameters={"n_patchs": 2})
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "unknown request parameter 'n_patchs'; known: mode" in error.value.message()
    assert _answered(server) == before


def test_a_request_abandoned_by_its_client_stops_within_a_scale(client, server):
    """A gRPC deadline that passes cancels the request in Triton; the pipeline asks before every scale
    and stops, so the abandoned request costs a fraction of a full run (TINY has three scales)."""
    image = scene(500, 700, seed=3)
    inputs = [tensor(io_spec.IMAGE, image, "UINT8")]
    count = _pipeline_compute(client)[0] + 1  # read before the request, so it cannot be counted yet
    client.infer(io_spec.PIPELINE_MODEL, inputs)  # warm: the first run of a shape pays one-time costs
    before = _wait_for_count(client, count)
    client.infer(io_spec.PIPELINE_MODEL, inputs)
    after = _wait_for_count(client, count + 1)
    full = after - before
    assert full > 0
    answered = _answered(server)
    with pytest.raises(grpc.InferenceServerException) as error:
        client.infer(io_spec.PIPELINE_MODEL, inputs, client_timeout=full / 10)
    assert error.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    # The server finishes (or stops) the abandoned request on its own time: wait for its statistics.
    total = _wait_for_count(client, count + 2)
    assert total - after < 0.6 * full, (total - after, full)
    assert _increase(answered, _answered(server)) == {("cancelled",): 1}
    assert_good_request_succeeds(client)


def test_a_deadline_returns_the_map_so_far_within_a_scale_through_the_ensemble(client, server):
    """``deadline_ms`` ends the refinement before the next scale and answers with the map refined so
    far, saying how far it got. It works behind the ensemble, which Triton (24.10) does not pass a
    cancellation through (magnet-client sends its timeout as it)."""
    image = scene(500, 700, seed=3)
    data = tensor(io_spec.IMAGE_BYTES, np.array([png_bytes(image)], dtype=np.object_), "BYTES")
    count = _pipeline_compute(client)[0] + 1
    client.infer(io_spec.ENSEMBLE_MODEL, [data])  # warm
    before = _wait_for_count(client, count)
    client.infer(io_spec.ENSEMBLE_MODEL, [data])
    full = _wait_for_count(client, count + 1) - before
    answered = _answered(server)
    budget_ms = max(1, int(full * 1000 / 10))
    partial = client.infer(io_spec.ENSEMBLE_MODEL, [data], parameters={io_spec.DEADLINE_PARAMETER: budget_ms})
    stopped = _wait_for_count(client, count + 2) - before - full
    assert stopped < 0.6 * full, (stopped, full)
    # TINY has three scales; a tenth of the run leaves time for the coarse pass and at most one more.
    done = int(partial.as_numpy(io_spec.SCALES_DONE)[0])
    assert 1 <= done < TINY.num_scales, done
    assert partial.as_numpy(io_spec.SEGMENTATION).shape == image.shape[:2]
    full_run = client.infer(io_spec.ENSEMBLE_MODEL, [data])
    assert int(full_run.as_numpy(io_spec.SCALES_DONE)[0]) == TINY.num_scales
    assert _increase(answered, _answered(server)) == {("success",): 2}


@pytest.mark.parametrize("budget", [0, -5, 1.5, "soon", True])
def test_a_bad_deadline_is_refused_with_the_rule(client, budget):
    with pytest.raises(grpc.InferenceServerException) as error:
        client.infer(
            io_spec.PIPELINE_MODEL,
            [tensor(io_spec.IMAGE, scene(20, 20), "UINT8")],
            parameters={io_spec.DEADLINE_PARAMETER: budget},
        )
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "deadline_ms must be an integer > 0" in error.value.message()
