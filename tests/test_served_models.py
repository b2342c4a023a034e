"""The served Python-backend models, run in this process against a fake Triton (:mod:`tests.fake_triton`).

Each model gets the ``args`` Triton gives ``initialize`` (its config as written by the exporter) and
batches of requests in ``execute``; BLS calls of the pipeline go to the seeded PyTorch networks of
:data:`~tests.tiny_repository.TINY`. Expected values come from elsewhere: the encoded pixels, Pillow,
:func:`magnet_triton.pipeline.run_magnet` with the same networks, numpy. ``test_server_pipeline`` checks
the same behaviour through a real tritonserver; these run in seconds and say which model broke.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from magnet_triton import io_spec
from magnet_triton.export.repository import RepositoryOptions, model_configs
from tests import fake_triton
from tests.tiny_repository import SEED, TINY, png_bytes, scene

ALL_OUTPUTS = tuple(t.name for t in io_spec.pipeline_spec().outputs)
#: Small enough to be quick on two cores, not square so a swapped H and W shows.
IMAGE = scene(100, 140, seed=3)
#: The pipeline's size limit in these tests: IMAGE (14000 pixels) fits, 150 x 150 does not.
MAX_IMAGE_PIXELS = 20_000


# ---------------------------------------------------------------------- Triton's side of the fence
def triton_args(config: dict[str, Any], model_dir: Path) -> dict[str, str]:
    """The ``args`` Triton passes to ``initialize`` for version 1 of a CPU instance of ``config``.

    Triton hands over the config as JSON with ``parameters`` as ``{key: {"string_value": ...}}``,
    not the list form of ``config.pbtxt``.
    """
    as_json = dict(config)
    as_json["parameters"] = {
        p["key"]: {"string_value": p["value"]["string_value"]} for p in config.get("parameters", [])
    }
    return {
        "model_config": json.dumps(as_json),
        "model_instance_kind": "CPU",
        "model_instance_name": f"{config['name']}_0",
        "model_instance_device_id": "0",
        "model_repository": str(model_dir),
        "model_version": "1",
        "model_name": config["name"],
    }


def request(
    *tensors: fake_triton.Tensor, parameters=None, outputs=ALL_OUTPUTS
) -> fake_triton.InferenceRequest:
    """A request as ``execute`` gets it; Triton lists every output when the client names none."""
    return fake_triton.InferenceRequest(
        inputs=list(tensors), requested_output_names=list(outputs), parameters=parameters
    )


def outputs_of(response: fake_triton.InferenceResponse) -> dict[str, np.ndarray]:
    """Output name -> array of a successful response."""
    assert not response.has_error(), response.error().message()
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


def error_of(response: fake_triton.InferenceResponse, code: int) -> str:
    """The message of an error response, checking its code; a message for people, not a traceback."""
    assert response.has_error(), f"expected an error, got outputs {response.output_tensors()}"
    assert response.error().code() == code, response.error()
    message = response.error().message()
    assert message and "Traceback" not in message
    return message


def text(value: str) -> np.ndarray:
    """A 1-element BYTES input."""
    return np.array([value.encode()], dtype=object)


# ---------------------------------------------------------------------- magnet_decode
@pytest.fixture
def decode(monkeypatch):
    from magnet_triton.model_repository.decode_model import TritonPythonModel

    fake_triton.install(monkeypatch)
    model = TritonPythonModel()
    model.initialize(triton_args(model_configs(TINY, RepositoryOptions())[io_spec.DECODE_MODEL], Path(".")))
    return model


def encoded(data: bytes) -> fake_triton.Tensor:
    return fake_triton.Tensor(io_spec.IMAGE_BYTES, np.array([data], dtype=object))


def test_png_bytes_decode_to_the_encoded_pixels_as_h_w_3_uint8(decode):
    grey = IMAGE[:, :, 1]
    grey_png = png_bytes(grey)
    responses = decode.execute([request(encoded(png_bytes(IMAGE))), request(encoded(grey_png))])

    rgb = outputs_of(responses[0])[io_spec.IMAGE]
    assert rgb.dtype == np.uint8 and rgb.shape == (100, 140, 3)
    np.testing.assert_array_equal(rgb, IMAGE)
    # A grey PNG comes back as RGB with three equal channels, as Pillow converts it.
    from_grey = outputs_of(responses[1])[io_spec.IMAGE]
    np.testing.assert_array_equal(from_grey, np.asarray(Image.open(io.BytesIO(grey_png)).convert("RGB")))
    np.testing.assert_array_equal(from_grey, np.repeat(grey[:, :, None], 3, axis=2))


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"", "is empty"),
        (b"definitely not a PNG", "is not a readable image"),
        (png_bytes(IMAGE)[:60], "is not a readable image"),
    ],
    ids=["empty", "not an image", "truncated PNG"],
)
def test_a_corrupt_file_is_refused_saying_why_and_the_other_request_of_the_batch_decodes(
    decode, payload, words
):
    bad, good = decode.execute([request(encoded(payload)), request(encoded(png_bytes(IMAGE)))])
    message = error_of(bad, fake_triton.TritonError.INVALID_ARG)
    assert f"the {io_spec.IMAGE_BYTES} input {words}" in message
    np.testing.assert_array_equal(outputs_of(good)[io_spec.IMAGE], IMAGE)


def test_more_than_one_encoded_image_in_image_bytes_is_refused(decode):
    two = fake_triton.Tensor(io_spec.IMAGE_BYTES, np.array([png_bytes(IMAGE)] * 2, dtype=object))
    (response,) = decode.execute([request(two)])
    assert "must hold one encoded image, got 2 elements" in error_of(
        response, fake_triton.TritonError.INVALID_ARG
    )


def test_a_bug_while_decoding_is_an_internal_error_naming_the_model_and_the_batch_goes_on(
    decode, monkeypatch
):
    from magnet_triton.model_repository import decode_model

    real_decode = decode_model.decode_image

    def decode_or_crash(data: bytes, **kwargs):
        if data == b"crash":
            raise RuntimeError("decoder bug")
        return real_decode(data, **kwargs)

    monkeypatch.setattr(decode_model, "decode_image", decode_or_crash)
    bad, good = decode.execute([request(encoded(b"crash")), request(encoded(png_bytes(IMAGE)))])
    message = error_of(bad, fake_triton.TritonError.INTERNAL)
    assert message == f"internal error in {io_spec.DECODE_MODEL}: RuntimeError: decoder bug"
    np.testing.assert_array_equal(outputs_of(good)[io_spec.IMAGE], IMAGE)


# ---------------------------------------------------------------------- magnet_pipeline
class NetworkModels:
    """Plays ``magnet_backbone`` and ``magnet_refiner_1..n`` (each at version 1) for BLS calls.

    Answers as Triton would: an error response for an unknown model, version or input name, and
    ``fail_next`` error responses on request. ``calls`` records (model, version) of every call; -1 is
    "the newest version", which is what the pipeline asks for unless its network_version is pinned.
    """

    def __init__(self, networks: Any) -> None:
        self.networks = networks
        self.calls: list[tuple[str, int]] = []
        self.fail_next = 0

    def __call__(self, bls: fake_triton.InferenceRequest) -> fake_triton.InferenceResponse:
        self.calls.append((bls.model_name, bls.model_version))
        if self.fail_next:
            self.fail_next -= 1
            return fake_triton.InferenceResponse(error=fake_triton.TritonError("out of memory"))
        names = io_spec.DEFAULT_NAMES
        expected = {names.backbone: io_spec.PATCHES} | {
            name: io_spec.FINE_AND_COARSE for name in names.refiners(TINY.n_refiners)
        }
        if bls.model_name not in expected:
            return self._error(f"no model {bls.model_name!r}")
        input_name = expected[bls.model_name]
        if bls.model_version not in (-1, 1):
            return self._error(f"{bls.model_name} has no version {bls.model_version}")
        (tensor,) = bls.inputs()
        if tensor.name() != input_name or bls.requested_output_names() != [io_spec.PROBABILITIES]:
            return self._error(f"{bls.model_name} takes {input_name} and gives {io_spec.PROBABILITIES}")
        x = torch.from_numpy(tensor.as_numpy())
        if bls.model_name == names.backbone:
            y = self.networks.backbone(x)
        else:
            y = self.networks.refiner(names.refiners(TINY.n_refiners).index(bls.model_name), x)
        return fake_triton.InferenceResponse([fake_triton.Tensor(io_spec.PROBABILITIES, y.numpy())])

    @staticmethod
    def _error(message: str) -> fake_triton.InferenceResponse:
        return fake_triton.InferenceResponse(
            error=fake_triton.TritonError(message, fake_triton.TritonError.INVALID_ARG)
        )


@pytest.fixture(scope="module")
def networks():
    from magnet_triton.local import load_networks

    return load_networks(TINY, None, [], random_seed=SEED)


@pytest.fixture(scope="module")
def expected(networks):
    """mode -> ``run_magnet`` on :data:`IMAGE` with the same networks, computed once each."""
    from magnet_triton.pipeline import run_magnet

    results = {}

    def result(mode: str):
        if mode not in results:
            results[mode] = run_magnet(IMAGE, TINY.with_overrides(mode=mode), networks)
        return results[mode]

    return result


@pytest.fixture
def network_models(networks):
    return NetworkModels(networks)


@pytest.fixture
def pipeline(monkeypatch, tmp_path, network_models):
    from magnet_triton.model_repository.pipeline_model import TritonPythonModel

    fake_triton.install(monkeypatch, bls=network_models)
    config = model_configs(TINY, RepositoryOptions(max_image_pixels=MAX_IMAGE_PIXELS))[io_spec.PIPELINE_MODEL]
    threads = torch.get_num_threads()
    model = TritonPythonModel()
    model.initialize(triton_args(config, tmp_path / io_spec.PIPELINE_MODEL))
    yield model
    torch.set_num_threads(threads)  # initialize sets the process-wide count; leave it as it was


def image_input(image: np.ndarray = IMAGE) -> fake_triton.Tensor:
    return fake_triton.Tensor(io_spec.IMAGE, image)


def test_the_served_segmentation_is_run_magnet_with_the_same_networks(pipeline, network_models, expected):
    (response,) = pipeline.execute([request(image_input())])
    served = outputs_of(response)
    reference = expected("magnet")

    assert set(served) == set(ALL_OUTPUTS)
    np.testing.assert_array_equal(served[io_spec.SEGMENTATION], reference.segmentation)
    np.testing.assert_array_equal(served[io_spec.COARSE_SEGMENTATION], reference.coarse_segmentation)
    assert served[io_spec.CONFIDENCE].dtype == np.float32
    np.testing.assert_allclose(served[io_spec.CONFIDENCE], reference.confidence, rtol=1e-6, atol=1e-7)
    # Each refiner is a model of its own; every network goes by its newest loaded version.
    assert set(network_models.calls) == {
        (io_spec.BACKBONE_MODEL, -1),
        (io_spec.DEFAULT_NAMES.refiner(0), -1),
        (io_spec.DEFAULT_NAMES.refiner(1), -1),
    }


def test_the_chunks_of_a_scale_are_in_flight_together(pipeline, expected):
    import sys

    pb_utils = sys.modules["triton_python_backend_utils"]
    (response,) = pipeline.execute([request(image_input())])
    np.testing.assert_array_equal(outputs_of(response)[io_spec.SEGMENTATION], expected("magnet").segmentation)
    # The finest scale of TINY on this image has more patches than one BLS batch (bls_max_batch 8):
    # its chunks went out with async_exec at once, not one round trip after another.
    assert pb_utils.max_in_flight >= 2 and pb_utils.in_flight == 0


def test_a_request_asking_only_for_the_segmentation_gets_only_the_segmentation(pipeline, expected):
    asked = request(image_input(), parameters={"mode": "downsample"}, outputs=[io_spec.SEGMENTATION])
    (response,) = pipeline.execute([asked])
    served = outputs_of(response)
    assert list(served) == [io_spec.SEGMENTATION]
    np.testing.assert_array_equal(served[io_spec.SEGMENTATION], expected("downsample").segmentation)


def test_behind_the_ensemble_the_outputs_parameter_says_which_maps_the_client_wants(pipeline, expected):
    # The ensemble asks its pipeline step for every output it maps; the client's choice comes as the
    # outputs parameter, and the maps it leaves out are neither computed nor sent.
    every = request(image_input(), parameters={"mode": "downsample", "outputs": "SEGMENTATION,SCALES_DONE"})
    confidence_too = request(image_input(), parameters={"mode": "downsample", "outputs": " CONFIDENCE"})
    (alone, with_confidence) = pipeline.execute([every, confidence_too])
    assert sorted(outputs_of(alone)) == [io_spec.SCALES_DONE, io_spec.SEGMENTATION]
    np.testing.assert_array_equal(
        outputs_of(alone)[io_spec.SEGMENTATION], expected("downsample").segmentation
    )
    # The class map always comes back, named or not.
    assert sorted(outputs_of(with_confidence)) == [io_spec.CONFIDENCE, io_spec.SEGMENTATION]
    np.testing.assert_array_equal(
        outputs_of(with_confidence)[io_spec.CONFIDENCE], expected("downsample").confidence
    )


@pytest.mark.parametrize("value", ["SEGMENTATION,PROBABILITIES", 3, ""])
def test_an_outputs_parameter_naming_no_output_of_the_pipeline_is_refused(pipeline, value):
    (response,) = pipeline.execute(
        [request(image_input(), parameters={"mode": "downsample", "outputs": value})]
    )
    message = error_of(response, fake_triton.TritonError.INVALID_ARG)
    assert "request parameter outputs must name outputs among" in message
    assert "SEGMENTATION" in message


def test_an_override_applies_as_a_request_parameter_and_as_an_input_and_the_input_wins(pipeline, expected):
    downsample, magnet = expected("downsample").segmentation, expected("magnet").segmentation
    assert not np.array_equal(downsample, magnet), (
        "the two modes must differ on this image for the test to mean anything"
    )

    by_parameter, by_input, both = pipeline.execute(
        [
            request(image_input(), parameters={"mode": "downsample"}),
            request(image_input(), fake_triton.Tensor(io_spec.MODE, text("downsample"))),
            request(
                image_input(),
                fake_triton.Tensor(io_spec.MODE, text("magnet")),
                parameters={"mode": "downsample"},
            ),
        ]
    )
    np.testing.assert_array_equal(outputs_of(by_parameter)[io_spec.SEGMENTATION], downsample)
    np.testing.assert_array_equal(outputs_of(by_input)[io_spec.SEGMENTATION], downsample)
    np.testing.assert_array_equal(outputs_of(both)[io_spec.SEGMENTATION], magnet)


BAD_OVERRIDES = {
    "unknown mode as input": (
        {"inputs": {io_spec.MODE: text("nope")}},
        ["unknown mode 'nope'", "downsample"],
    ),
    "unknown mode as parameter": ({"parameters": {"mode": "nope"}}, ["unknown mode 'nope'", "magnet-fast"]),
    "NaN n_points": (
        {"inputs": {io_spec.N_POINTS: np.array([np.nan], dtype=np.float32)}},
        ["n_points must be in (0, 1]", "nan"],
    ),
    "n_points as text": ({"parameters": {"n_points": "many"}}, ["n_points must be a number", "'many'"]),
    "two n_patches": (
        {"inputs": {io_spec.N_PATCHES: np.array([1, 2], dtype=np.int32)}},
        ["N_PATCHES must hold exactly one value", "(2,)"],
    ),
    "misspelled parameter": (
        {"parameters": {"n_patchs": 2}},
        ["unknown request parameter 'n_patchs'", "known: mode, n_points, n_patches, patch_order"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_OVERRIDES))
def test_a_bad_override_is_refused_saying_what_is_wrong_and_the_good_request_beside_it_succeeds(
    pipeline, network_models, expected, case
):
    how, words = BAD_OVERRIDES[case]
    overrides = [fake_triton.Tensor(name, array) for name, array in how.get("inputs", {}).items()]
    bad_request = request(image_input(), *overrides, parameters=how.get("parameters"))
    good_request = request(image_input(), parameters={"mode": "downsample"})

    bad, good = pipeline.execute([bad_request, good_request])
    message = error_of(bad, fake_triton.TritonError.INVALID_ARG)
    for word in words:
        assert word in message
    np.testing.assert_array_equal(outputs_of(good)[io_spec.SEGMENTATION], expected("downsample").segmentation)
    # Overrides are checked before any work: the only network call is the good request's one patch.
    assert network_models.calls == [(io_spec.BACKBONE_MODEL, -1)]


def test_a_request_without_an_image_is_refused_naming_the_input(pipeline, network_models):
    (response,) = pipeline.execute([request(parameters={"mode": "downsample"})])
    message = error_of(response, fake_triton.TritonError.INVALID_ARG)
    assert f"{io_spec.PIPELINE_MODEL} needs the {io_spec.IMAGE} input" in message
    assert network_models.calls == []


def test_the_decode_step_refuses_an_image_over_the_configured_limit_by_its_declared_size(monkeypatch):
    from magnet_triton.model_repository.decode_model import TritonPythonModel

    fake_triton.install(monkeypatch)
    model = TritonPythonModel()
    config = model_configs(TINY, RepositoryOptions(max_image_pixels=100 * 100))[io_spec.DECODE_MODEL]
    model.initialize(triton_args(config, Path(".")))
    big, small = model.execute(
        [
            request(encoded(png_bytes(np.zeros((101, 100, 3), np.uint8)))),
            request(encoded(png_bytes(IMAGE[:50, :50]))),
        ]
    )
    message = error_of(big, fake_triton.TritonError.INVALID_ARG)
    assert "declares 100x101 = 10100 pixels, over the limit of 10000" in message
    assert outputs_of(small)[io_spec.IMAGE].shape == (50, 50, 3)


def test_the_decode_steps_configured_limit_holds_above_pillows_own_guard(monkeypatch):
    from PIL import Image

    from magnet_triton.model_repository.decode_model import TritonPythonModel
    from magnet_triton.sample import png_declaring

    fake_triton.install(monkeypatch)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # the step raises it; undone after
    model = TritonPythonModel()
    config = model_configs(TINY, RepositoryOptions(max_image_pixels=300_000_000))[io_spec.DECODE_MODEL]
    model.initialize(triton_args(config, Path(".")))
    (response,) = model.execute([request(encoded(png_declaring(20000, 20000)))])
    # Pillow alone refuses past 179 MP, whatever the config says; the configured limit is the one named.
    message = error_of(response, fake_triton.TritonError.INVALID_ARG)
    assert "declares 20000x20000 = 400000000 pixels, over the limit of 300000000" in message


def test_an_image_over_max_image_pixels_is_refused_with_the_limit_before_any_network_runs(
    pipeline, network_models
):
    (response,) = pipeline.execute([request(image_input(np.zeros((150, 150, 3), np.uint8)))])
    message = error_of(response, fake_triton.TritonError.INVALID_ARG)
    assert "150x150 = 22500 pixels" in message
    assert f"limit of {MAX_IMAGE_PIXELS}" in message
    assert network_models.calls == []


def test_a_failed_network_call_is_an_internal_error_naming_the_network_and_the_next_request_works(
    pipeline, network_models, expected
):
    network_models.fail_next = 1
    failed, next_one = pipeline.execute(
        [request(image_input(), parameters={"mode": "downsample"}) for _ in range(2)]
    )
    message = error_of(failed, fake_triton.TritonError.INTERNAL)
    assert message.startswith(f"internal error in {io_spec.PIPELINE_MODEL}: ")
    assert io_spec.BACKBONE_MODEL in message and "out of memory" in message
    np.testing.assert_array_equal(
        outputs_of(next_one)[io_spec.SEGMENTATION], expected("downsample").segmentation
    )


# ---------------------------------------------------------------------- responses on older backends
def test_without_error_codes_a_bad_request_still_gets_its_own_message(monkeypatch):
    """Python backends before 23.09 have a TritonError of one argument and no codes."""
    from magnet_triton.errors import MagnetError
    from magnet_triton.model_repository.responses import respond_to_each

    class OldTritonError:
        def __init__(self, message: str) -> None:
            self.text = message

    pb_utils = fake_triton.make_pb_utils()
    monkeypatch.setattr(pb_utils, "TritonError", OldTritonError)

    def handle(name: str):
        if name == "bad":
            raise MagnetError("bad request")
        if name == "bug":
            raise KeyError("x")
        return pb_utils.InferenceResponse(output_tensors=[])

    ok, bad, bug = respond_to_each(
        ["ok", "bad", "bug"], handle, pb_utils, "some_model", logging.getLogger("test")
    )
    assert not ok.has_error()
    assert bad.error().text == "bad request"
    assert bug.error().text == "internal error in some_model: KeyError: 'x'"


# ---------------------------------------------------------------------- the CPU network runner
def write_softmax_onnx(path: Path, input_name: str, output_name: str) -> None:
    """An ONNX file computing softmax over the channels of B x 3 x 64 x 64 float32: a stand-in network."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", [input_name], [output_name], axis=1)],
        "softmax",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", 3, 64, 64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by any onnxruntime this bundle supports
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


class CountingSession:
    """Wraps an onnxruntime session and counts its runs."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.runs = 0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.runs += 1
        return self.session.run(*args, **kwargs)


@pytest.fixture
def backbone_runner(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    from magnet_triton.model_repository.onnx_runner_model import TritonPythonModel

    fake_triton.install(monkeypatch)
    config = model_configs(TINY, RepositoryOptions())[io_spec.BACKBONE_MODEL]
    model_dir = tmp_path / io_spec.BACKBONE_MODEL
    write_softmax_onnx(model_dir / "1" / "model.onnx", io_spec.PATCHES, io_spec.PROBABILITIES)
    model = TritonPythonModel()
    model.initialize(triton_args(config, model_dir))
    model.session = CountingSession(model.session)
    return model


def patches_request(array: np.ndarray) -> fake_triton.InferenceRequest:
    return request(fake_triton.Tensor(io_spec.PATCHES, array), outputs=[io_spec.PROBABILITIES])


def test_the_requests_of_a_batch_share_one_onnxruntime_run_and_each_gets_its_own_rows(backbone_runner):
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 3, 64, 64)).astype(np.float32) for n in (1, 3, 2)]
    responses = backbone_runner.execute([patches_request(b) for b in batches])

    assert backbone_runner.session.runs == 1
    for batch, response in zip(batches, responses, strict=True):
        exp = np.exp(batch - batch.max(axis=1, keepdims=True))
        np.testing.assert_allclose(
            outputs_of(response)[io_spec.PROBABILITIES],
            exp / exp.sum(axis=1, keepdims=True),
            rtol=1e-5,
            atol=1e-6,
        )


def test_an_onnxruntime_failure_fails_every_request_of_its_batch_as_internal(backbone_runner):
    wrong_rank = np.zeros((1, 3, 64), np.float32)
    responses = backbone_runner.execute([patches_request(wrong_rank), patches_request(wrong_rank)])
    assert len(responses) == 2
    for response in responses:
        assert error_of(response, fake_triton.TritonError.INTERNAL).startswith("onnxruntime failed: ")


# ---------------------------------------------------------------------- the torch engine's runner
@pytest.fixture
def torch_refiner_runner(monkeypatch, tmp_path):
    from magnet_triton.model_repository.torch_runner_model import TritonPythonModel
    from magnet_triton.networks.weights import network_with_weights
    from magnet_triton.torch_engine import save_network_file

    fake_triton.install(monkeypatch)
    options = RepositoryOptions(engine="torch", max_batch=4, onnx_threads=1)
    config = model_configs(TINY, options)[io_spec.DEFAULT_NAMES.refiner(0)]
    model_dir = tmp_path / io_spec.DEFAULT_NAMES.refiner(0)
    (model_dir / "1").mkdir(parents=True)
    network = network_with_weights("refinement", TINY.num_classes, random_seed=11)
    save_network_file(model_dir / "1" / "model.pt", "refinement", TINY.num_classes, network)
    model = TritonPythonModel()
    model.initialize(triton_args(config, model_dir))
    return model, network


def test_the_torch_runner_serves_softmax_of_its_network_for_each_request_of_a_batch(torch_refiner_runner):
    import torch

    model, network = torch_refiner_runner
    rng = np.random.default_rng(1)
    batches = [rng.random(size=(n, 2 * TINY.num_classes, 64, 64), dtype=np.float32) for n in (2, 1)]
    requests = [
        request(fake_triton.Tensor(io_spec.FINE_AND_COARSE, b), outputs=[io_spec.PROBABILITIES])
        for b in batches
    ]
    responses = model.execute(requests)
    for batch, response in zip(batches, responses, strict=True):
        with torch.no_grad():
            expected = torch.softmax(network(torch.from_numpy(batch)), dim=1).numpy()
        got = outputs_of(response)[io_spec.PROBABILITIES]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_torch_engine_failure_fails_every_request_of_its_batch_as_internal(torch_refiner_runner):
    model, _ = torch_refiner_runner
    wrong = np.zeros((1, 3, 64, 64), dtype=np.float32)  # 3 channels, the refiner takes 2C = 10
    responses = model.execute([request(fake_triton.Tensor(io_spec.FINE_AND_COARSE, wrong))] * 2)
    for response in responses:
        assert "refinement failed" in error_of(response, fake_triton.TritonError.INTERNAL)


# ---------------------------------------------------------------------- abandoned and oversized work
def test_a_cancelled_request_stops_before_its_next_scale_and_says_cancelled(
    pipeline, network_models, expected
):
    cancelled = request(image_input())
    cancelled.cancel_after_calls = 2  # asked before the coarse pass, then before scales 1 and 2
    after = request(image_input(), parameters={"mode": "downsample"})
    stopped, good = pipeline.execute([cancelled, after])
    message = error_of(stopped, fake_triton.TritonError.CANCELLED)
    assert message == f"stopped after 2 of {TINY.num_scales} scales: the request was cancelled"
    # The coarse pass and scale 1 ran (backbone and refiner 1); scale 2's refiner never did.
    assert (io_spec.DEFAULT_NAMES.refiner(1), -1) not in network_models.calls
    assert (io_spec.DEFAULT_NAMES.refiner(0), -1) in network_models.calls
    np.testing.assert_array_equal(outputs_of(good)[io_spec.SEGMENTATION], expected("downsample").segmentation)


def test_a_passed_deadline_answers_with_the_coarse_map_and_says_one_scale(pipeline, expected):
    """A deadline of 1 ms has passed once the coarse pass is done (it always runs): the answer is the
    coarse prediction resized, which is what mode downsample computes, and SCALES_DONE says 1."""
    hurried, full = pipeline.execute(
        [request(image_input(), parameters={"deadline_ms": 1}), request(image_input())]
    )
    outputs = outputs_of(hurried)
    assert outputs[io_spec.SCALES_DONE].tolist() == [1]
    np.testing.assert_array_equal(outputs[io_spec.SEGMENTATION], expected("downsample").segmentation)
    assert outputs_of(full)[io_spec.SCALES_DONE].tolist() == [TINY.num_scales]
    np.testing.assert_array_equal(outputs_of(full)[io_spec.SEGMENTATION], expected("magnet").segmentation)


def test_request_work_counts_the_patches_and_points_each_mode_refines():
    from magnet_triton.pipeline import request_work

    # TINY: 64x64 crops of 128x128 (4) and 256x256 (16); n_points 0.25 of each scale's pixels.
    assert request_work(TINY) == (4 + 16, 128 * 128 // 4 + 256 * 256 // 4)
    # magnet-fast, 2 patches a scale: points in proportion to the patches kept (step 12).
    fast = TINY.with_overrides(mode="magnet-fast", n_patches=2)
    assert request_work(fast) == (2 + 2, 128 * 128 // 4 * 2 // 4 + 256 * 256 // 4 * 2 // 16)
    assert request_work(TINY.with_overrides(mode="downsample")) == (0, 0)
    assert request_work(TINY.with_overrides(mode="patching")) == (16, 0)


@pytest.mark.parametrize(
    ("caps", "words"),
    [
        ({"max_patches_per_request": 10}, "would refine 20 patches, over this server's cap of 10"),
        ({"max_points_per_request": 1000}, "would refine 20480 points, over this server's cap of 1000"),
    ],
)
def test_a_request_over_the_work_cap_is_refused_before_any_work(
    monkeypatch, tmp_path, network_models, caps, words
):
    from magnet_triton.model_repository.pipeline_model import TritonPythonModel

    fake_triton.install(monkeypatch, bls=network_models)
    config = model_configs(TINY, RepositoryOptions(**caps))[io_spec.PIPELINE_MODEL]
    model = TritonPythonModel()
    threads = torch.get_num_threads()
    model.initialize(triton_args(config, tmp_path / io_spec.PIPELINE_MODEL))
    try:
        over, within = model.execute(
            [request(image_input()), request(image_input(), parameters={"mode": "downsample"})]
        )
    finally:
        torch.set_num_threads(threads)
    message = error_of(over, fake_triton.TritonError.INVALID_ARG)
    assert words in message and "n_patches" in message
    assert outputs_of(within)[io_spec.SEGMENTATION].shape == IMAGE.shape[:2]
    assert network_models.calls == [(io_spec.BACKBONE_MODEL, -1)]  # only the downsample request ran
