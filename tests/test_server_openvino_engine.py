"""The ``cpu/openvino`` engine: export at each precision, served by a real tritonserver.

FP32 must give the class maps of the in-process PyTorch pipeline; INT8 quantizes the backbone only,
calibrated on patches of the given images; BF16 is refused, with the reason, on a CPU without it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from magnet_triton import io_spec
from magnet_triton.errors import MagnetError
from tests.tiny_repository import SEED, TINY, build_tiny_repository, scene, serving_tiny_repository

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'magnet-triton[openvino]')")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")


def _op_types(xml_path) -> set[str]:
    import openvino as ov

    return {op.get_type_name() for op in ov.Core().read_model(str(xml_path)).get_ops()}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving_tiny_repository(tmp_path_factory.mktemp("tiny_openvino"), engine="openvino") as running:
        yield running


@pytest.mark.server
def test_the_repository_serves_openvino_ir_through_its_runner(server):
    manifest = json.loads((server.model_repository / "magnet_repository.json").read_text())
    assert manifest["runtime"] == "cpu/openvino"
    for model, version in ((io_spec.BACKBONE_MODEL, "1"), (io_spec.DEFAULT_NAMES.refiner(1), "1")):
        folder = server.model_repository / model / version
        assert {"model.xml", "model.bin", "model.py"} <= {p.name for p in folder.iterdir()}
        assert "openvino_runner_model" in (folder / "model.py").read_text()
    config = (server.model_repository / io_spec.BACKBONE_MODEL / "config.pbtxt").read_text()
    assert 'key: "precision"' in config and 'string_value: "fp32"' in config


@pytest.mark.server
def test_served_fp32_class_maps_equal_the_in_process_pipeline(server):
    from magnet_triton.client import MagnetClient
    from magnet_triton.local import load_networks
    from magnet_triton.pipeline import run_magnet

    image = scene(120, 170, seed=5)
    with MagnetClient(server.grpc_url) as client:
        result = client.segment(image)
    local = run_magnet(image, TINY, load_networks(TINY, None, [], random_seed=SEED, max_batch=4))
    # OpenVINO FP32 against PyTorch FP32: other kernels, same arithmetic up to float32 rounding (parity
    # bound 2e-3 on probabilities), so only near-tie pixels may flip.
    assert (result.segmentation == local.segmentation).mean() >= 0.999
    np.testing.assert_allclose(result.confidence, local.confidence, atol=2e-3)


@pytest.mark.server
@pytest.mark.slow
def test_int8_quantizes_the_backbone_only_and_serves(tmp_path):
    from magnet_triton.client import MagnetClient
    from magnet_triton.server import TritonServer
    from tests.tiny_repository import skip_without_tritonserver

    skip_without_tritonserver()
    repository = build_tiny_repository(tmp_path, engine="openvino", precision="int8")
    assert "FakeQuantize" in _op_types(repository / io_spec.BACKBONE_MODEL / "1" / "model.xml")
    assert "FakeQuantize" not in _op_types(repository / io_spec.DEFAULT_NAMES.refiner(0) / "1" / "model.xml")
    parity = json.loads((repository / "magnet_repository.json").read_text())["provenance"]["parity"]
    assert parity["backbone_openvino"]["backend"] == "openvino-int8"
    assert parity["refiner_1_openvino"]["backend"] == "openvino-fp32"
    assert parity["refiner_1_openvino"]["passed"]
    image = scene(120, 170, seed=5)
    with (
        TritonServer(repository, log_path=tmp_path / "server.log") as running,
        MagnetClient(running.grpc_url) as client,
    ):
        result = client.segment(image)
    assert result.segmentation.shape == image.shape[:2]
    assert result.segmentation.max() < TINY.num_classes


def _cpu_has_bf16() -> bool:
    from magnet_triton.openvino_engine import cpu_capabilities

    return "BF16" in cpu_capabilities()


def test_bf16_is_refused_before_any_work_on_a_cpu_without_it(tmp_path):
    if _cpu_has_bf16():
        pytest.skip("this CPU runs BF16 (AVX512-BF16 or AMX): nothing to refuse here")
    with pytest.raises(MagnetError, match=r"cannot run bf16 networks: it has no AVX512-BF16 or AMX"):
        build_tiny_repository(tmp_path, engine="openvino", precision="bf16")
    assert not (tmp_path / "repository").exists()


def test_bf16_refusal_names_what_the_cpu_reports(monkeypatch):
    from magnet_triton import openvino_engine

    monkeypatch.setattr(openvino_engine, "cpu_capabilities", lambda: ("FP32", "INT8"))
    with pytest.raises(MagnetError, match=r"no AVX512-BF16 or AMX \(OpenVINO reports \['FP32', 'INT8'\]\)"):
        openvino_engine.check_precision("bf16")
    openvino_engine.check_precision("int8")  # INT8 is there: no error


def test_a_precision_the_engine_lacks_is_refused_with_the_ones_it_has():
    from magnet_triton.export.repository import RepositoryOptions

    with pytest.raises(
        MagnetError, match=r"cpu/openvino runs \['fp32', 'bf16', 'int8'\] networks, not 'fp16'"
    ):
        RepositoryOptions(engine="openvino", precision="fp16")
    with pytest.raises(MagnetError, match=r"cpu/onnxruntime runs \['fp32'\] networks, not 'int8'"):
        RepositoryOptions(precision="int8")


def test_int8_calibration_reads_the_given_images_and_refuses_bad_ones(tmp_path):
    from magnet_triton.export.artifacts import build_artifacts

    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"no image here")
    with pytest.raises(MagnetError, match=r"not-an-image\.png"):
        build_artifacts(
            TINY,
            backbone_checkpoint=None,
            refiner_checkpoints=[],
            random_seed=SEED,
            out_dir=tmp_path / "artifacts",
            engine="openvino",
            precision="int8",
            calibration_images=[bad],
        )
    assert not (tmp_path / "artifacts").exists()


def test_calibration_patches_cover_every_scale_normalised():
    from magnet_triton.openvino_engine import calibration_patches

    patches = calibration_patches(TINY, [scene(256, 256, seed=1)], limit=8)
    # TINY has 1 + 4 + 16 patches; 8 spread over them reach the coarse and the finest scale.
    assert len(patches) == 8
    assert all(p.shape == (1, 3, 64, 64) and p.dtype == np.float32 for p in patches)
    # ImageNet-normalised pixels lie in [(0 - 0.485) / 0.229, (1 - 0.406) / 0.225].
    assert min(p.min() for p in patches) >= -2.2 and max(p.max() for p in patches) <= 2.7


def test_the_registry_fp32_patterns_name_openvino_nodes_by_type_and_by_name(tmp_path):
    """INT8 leaves out of the quantization what FP16 engines keep FP32: TensorRT's ``type:`` patterns
    map to OpenVINO op types, the others match node names."""
    from magnet_triton import openvino_engine
    from magnet_triton.export.onnx_export import export_onnx
    from magnet_triton.io_spec import backbone_spec
    from magnet_triton.networks.registry import network_entry
    from magnet_triton.networks.weights import network_with_weights
    from magnet_triton.settings import get_preset

    settings = get_preset("cityscapes", input_size=(64, 32))
    path = export_onnx(
        network_with_weights("hrnet18+ocr", 19, random_seed=0),
        backbone_spec(settings, 2),
        tmp_path / "b.onnx",
    )
    model = openvino_engine.convert_onnx(path)
    kept = set(openvino_engine.ignored_nodes(model, network_entry("hrnet18+ocr").fp32_layers))
    types = {op.get_friendly_name(): op.get_type_name() for op in model.get_ops()}
    # Every softmax and matrix product (the OCR head's attention and gathering) is kept, and the
    # element-wise scaling inside the object-context block by its name; no convolution is.
    assert {n for n, t in types.items() if t in ("Softmax", "SoftMax", "MatMul")} <= kept
    assert any("object_context_block" in n and types[n] == "Multiply" for n in kept)
    assert not any(types[n] == "Convolution" for n in kept)
    assert openvino_engine.ignored_nodes(model, ()) == []
