"""TensorRT engines: build records, version/GPU refusal and FP32 pinning (pure logic, always run), and
real builds on a GPU (marked ``tensorrt``, skipped with a reason where TensorRT or a GPU is absent)."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import pytest

from magnet_triton.errors import MagnetError
from magnet_triton.export import tensorrt_build as tb
from magnet_triton.export.engine_record import (
    BuildEnvironment,
    EngineRecord,
    check_compatibility,
    read_record,
    record_path,
    write_record,
)
from magnet_triton.export.tensorrt_build import select_fp32_layers
from magnet_triton.io_spec import refiner_spec
from magnet_triton.networks.registry import network_entry
from magnet_triton.settings import get_preset

HERE = BuildEnvironment("10.3.0", "NVIDIA H100 80GB HBM3", "9.0")


def _record(**changes) -> EngineRecord:
    record = EngineRecord(
        engine="model.plan",
        model="magnet_refiner",
        tensorrt_version=HERE.tensorrt_version,
        gpu_name=HERE.gpu_name,
        compute_capability=HERE.compute_capability,
        precision="fp16",
        profile={
            "FINE_AND_COARSE": {"min": [1, 38, 128, 256], "opt": [8, 38, 128, 256], "max": [8, 38, 128, 256]}
        },
        onnx_path="onnx/refiner_1.onnx",
        onnx_sha256="0" * 64,
        build_time_s=12.5,
        built_at="2026-01-01T00:00:00+00:00",
        parity={"max_abs": 1e-3},
    )
    return dataclasses.replace(record, **changes)


# ---------------------------------------------------------------------- records
def test_record_sits_next_to_the_engine_and_round_trips(tmp_path):
    engine = tmp_path / "1" / "model.plan"
    path = write_record(_record(), engine)
    assert path == record_path(engine) == tmp_path / "1" / "model.plan.json"
    assert read_record(engine) == _record()
    data = json.loads(path.read_text())
    assert data["tensorrt_version"] == "10.3.0" and data["compute_capability"] == "9.0"
    assert data["parity"] == {"max_abs": 1e-3}


def test_engine_without_record_is_refused(tmp_path):
    with pytest.raises(MagnetError, match="no build record"):
        read_record(tmp_path / "model.plan")


def test_record_missing_fields_is_refused(tmp_path):
    record_path(tmp_path / "m.plan").write_text(json.dumps({"engine": "m.plan"}))
    with pytest.raises(MagnetError, match="lacks"):
        read_record(tmp_path / "m.plan")


def test_same_version_and_gpu_is_accepted():
    check_compatibility(_record(), HERE)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"tensorrt_version": "10.0.1"}, "TensorRT version"),
        ({"gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}, "compute capability, GPU"),
        ({"gpu_name": "NVIDIA H100 PCIe"}, "GPU"),
    ],
)
def test_other_version_or_gpu_is_refused_naming_both(change, what):
    record = _record(**change)
    with pytest.raises(MagnetError) as err:
        check_compatibility(record, HERE, "model.plan")
    message = str(err.value)
    assert record.tensorrt_version in message and HERE.tensorrt_version in message
    assert record.gpu_name in message and HERE.gpu_name in message
    assert f"{what} differ" in message


def test_load_engine_reads_the_record_and_refuses_before_deserializing(tmp_path, monkeypatch):
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"not an engine")
    write_record(_record(tensorrt_version="8.6.1"), engine)

    class NoRuntime:
        def Runtime(self, *_):  # mirrors trt.Runtime
            raise AssertionError("deserialized an engine built for another TensorRT")

    monkeypatch.setattr(tb, "import_tensorrt", lambda: NoRuntime())
    monkeypatch.setattr(tb, "current_environment", lambda device=0: HERE)
    with pytest.raises(MagnetError, match=r"TensorRT 8\.6\.1 .* TensorRT 10\.3\.0"):
        tb.load_engine(engine)


# ---------------------------------------------------------------------- FP32 pinning
FAKE_LAYERS = [
    ("/network/conv1/Conv", "CONVOLUTION"),
    ("/network/ocr_distri_head/object_context_block/MatMul", "MATRIX_MULTIPLY"),
    ("/network/ocr_distri_head/object_context_block/Mul", "ELEMENTWISE"),
    ("/network/ocr_distri_head/object_context_block/Softmax", "SOFTMAX"),
    ("/network/ocr_distri_head/object_context_block/f_pixel/f_pixel.0/Conv", "CONVOLUTION"),
    ("/network/MatMul", "MATRIX_MULTIPLY"),
    ("/Softmax", "SOFTMAX"),
    ("/network/Add", "ELEMENTWISE"),
]


def test_ocr_patterns_pin_softmax_matmul_and_the_ocr_attention_only():
    assert select_fp32_layers(FAKE_LAYERS, network_entry("hrnet18+ocr").fp32_layers) == [
        "/network/ocr_distri_head/object_context_block/MatMul",
        "/network/ocr_distri_head/object_context_block/Mul",
        "/network/ocr_distri_head/object_context_block/Softmax",
        "/network/MatMul",
        "/Softmax",
    ]


def test_patterns_match_types_case_insensitively_and_names_as_regexes():
    assert select_fp32_layers(FAKE_LAYERS, ["type:softmax"]) == [
        "/network/ocr_distri_head/object_context_block/Softmax",
        "/Softmax",
    ]
    assert select_fp32_layers(FAKE_LAYERS, [r"OCR_.*conv$"]) == [
        "/network/ocr_distri_head/object_context_block/f_pixel/f_pixel.0/Conv"
    ]
    assert select_fp32_layers(FAKE_LAYERS, []) == []


def test_bad_pattern_is_a_clear_error():
    with pytest.raises(MagnetError, match="pattern"):
        select_fp32_layers(FAKE_LAYERS, ["("])


def test_pinning_skips_layers_with_non_float_outputs():
    trt = types.SimpleNamespace(
        float32="f32",
        float16="f16",
        int64="i64",
        LayerType=types.SimpleNamespace(CONSTANT="CONSTANT", SHAPE="SHAPE"),
    )

    class Layer:
        def __init__(self, name, type_name, dtype):
            self.name, self.type, self.dtype = name, types.SimpleNamespace(name=type_name), dtype
            self.num_outputs, self.precision, self.output_types = 1, None, {}

        def get_output(self, _):
            return types.SimpleNamespace(dtype=self.dtype)

        def set_output_type(self, j, dtype):
            self.output_types[j] = dtype

    layers = [
        Layer("/network/MatMul", "MATRIX_MULTIPLY", "f32"),
        Layer("/network/object_context_block/Mul_shape", "ELEMENTWISE", "i64"),
        Layer("/network/Conv", "CONVOLUTION", "f32"),
    ]
    network = types.SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    pinned = tb._pin_fp32(trt, network, ["type:MATRIX_MULTIPLY", "object_context_block"])
    assert pinned == ["/network/MatMul"]
    assert layers[0].precision == "f32" and layers[0].output_types == {0: "f32"}
    assert layers[1].precision is None and layers[2].precision is None


# ---------------------------------------------------------------------- without TensorRT
def _tensorrt_missing() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.skipif(not _tensorrt_missing(), reason="TensorRT is installed here")
def test_build_without_tensorrt_says_how_to_install_it(tmp_path):
    onnx_file = tmp_path / "r.onnx"
    onnx_file.write_bytes(b"")
    spec = refiner_spec(get_preset("cityscapes"), 8)
    with pytest.raises(MagnetError, match=r"pip install tensorrt .*--target cpu"):
        tb.build_engine(onnx_file, tmp_path / "r.plan", spec)


def test_bad_precision_is_refused_before_tensorrt_is_needed(tmp_path):
    spec = refiner_spec(get_preset("cityscapes"), 8)
    with pytest.raises(MagnetError, match="precision"):
        tb.build_engine(tmp_path / "r.onnx", tmp_path / "r.plan", spec, precision="int8")


def test_fake_gpu_is_reported_as_missing_without_cuda(monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(MagnetError, match="no CUDA GPU"):
        tb.gpu_identity(0)


# ---------------------------------------------------------------------- the build against a stand-in
class _FakeTensorRT(types.SimpleNamespace):
    """The part of the TensorRT 10 Python API that ``build_engine`` uses, recording the calls.

    It checks the order and arguments of the calls in this module, not TensorRT itself (the
    ``tensorrt``-marked tests below do that on a GPU).
    """

    def __init__(self, io_names: tuple[str, str]) -> None:
        calls: list[tuple] = []
        enum = types.SimpleNamespace
        layer_type = enum(CONSTANT="CONSTANT", SHAPE="SHAPE")

        def layer(name: str, type_name: str):
            lay = types.SimpleNamespace(name=name, type=enum(name=type_name), num_outputs=1, precision=None)
            lay.get_output = lambda j: enum(dtype="f32")
            lay.set_output_type = lambda j, dtype: calls.append(("output_type", name, dtype))
            return lay

        layers = [layer("/network/conv1/Conv", "CONVOLUTION"), layer("/Softmax", "SOFTMAX")]
        network = enum(
            num_inputs=1,
            get_input=lambda i: enum(name=io_names[0]),
            num_outputs=1,
            get_output=lambda i: enum(name=io_names[1]),
            num_layers=len(layers),
            get_layer=lambda i: layers[i],
        )
        cache = enum(serialize=lambda: b"timing-cache")
        config = enum(
            set_memory_pool_limit=lambda pool, size: calls.append(("pool", pool, size)),
            add_optimization_profile=lambda prof: calls.append(("add_profile",)),
            set_flag=lambda flag: calls.append(("set_flag", flag)),
            clear_flag=lambda flag: calls.append(("clear_flag", flag)),
            create_timing_cache=lambda blob: calls.append(("create_cache", bytes(blob))) or cache,
            set_timing_cache=lambda c, ignore_mismatch: True,
            get_timing_cache=lambda: cache,
        )
        builder = enum(
            create_network=lambda flags: calls.append(("network_flags", flags)) or network,
            create_builder_config=lambda: config,
            create_optimization_profile=lambda: enum(
                set_shape=lambda name, lo, opt, hi: calls.append(("shape", name, lo, opt, hi))
            ),
            build_serialized_network=lambda net, cfg: b"serialized-engine",
        )
        super().__init__(
            __version__="10.3.0",
            calls=calls,
            layers=layers,
            float32="f32",
            float16="f16",
            LayerType=layer_type,
            Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None}),
            Builder=lambda logger: builder,
            OnnxParser=lambda net, logger: enum(parse_from_file=lambda path: True, num_errors=0),
            MemoryPoolType=enum(WORKSPACE="WORKSPACE"),
            BuilderFlag=enum(FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY", TF32="TF32"),
            Runtime=lambda logger: enum(deserialize_cuda_engine=lambda blob: enum(blob=bytes(blob))),
        )


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_sequence_against_a_stand_in(tmp_path, monkeypatch, precision):
    spec = refiner_spec(get_preset("cityscapes"), 8)
    fake = _FakeTensorRT((spec.input_names[0], spec.output_names[0]))
    monkeypatch.setattr(tb, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(tb, "_logger", None)
    monkeypatch.setattr(tb, "gpu_identity", lambda device=0: (HERE.gpu_name, HERE.compute_capability))
    onnx_file = tmp_path / "r.onnx"
    onnx_file.write_bytes(b"onnx bytes")
    cache = tmp_path / "timing.cache"
    record = tb.build_engine(
        onnx_file,
        tmp_path / "r.plan",
        spec,
        precision=precision,
        max_batch=4,
        opt_batch=2,
        timing_cache_path=cache,
        fp32_layers=network_entry("refinement").fp32_layers,  # the stand-in file has no metadata to read
    )
    assert (tmp_path / "r.plan").read_bytes() == b"serialized-engine"
    assert cache.read_bytes() == b"timing-cache" and not record.timing_cache_loaded
    assert ("network_flags", 0) in fake.calls
    assert ("shape", "FINE_AND_COARSE", (1, 38, 128, 256), (2, 38, 128, 256), (4, 38, 128, 256)) in fake.calls
    assert record.profile["FINE_AND_COARSE"]["max"] == [4, 38, 128, 256]
    assert read_record(tmp_path / "r.plan") == record
    if precision == "fp16":
        assert ("set_flag", "FP16") in fake.calls and ("set_flag", "OBEY") in fake.calls
        assert record.pinned_layers == ["/Softmax"] and fake.layers[1].precision == "f32"
        assert fake.layers[0].precision is None
    else:
        assert ("clear_flag", "TF32") in fake.calls and record.pinned_layers == []
    again = tb.build_engine(
        onnx_file, tmp_path / "s.plan", spec, precision=precision, timing_cache_path=cache, fp32_layers=[]
    )
    assert again.timing_cache_loaded and ("create_cache", b"timing-cache") in fake.calls
    assert tb.load_engine(tmp_path / "s.plan").engine.blob == b"serialized-engine"


def test_build_refuses_a_graph_whose_names_differ_from_the_spec(tmp_path, monkeypatch):
    spec = refiner_spec(get_preset("cityscapes"), 8)
    monkeypatch.setattr(tb, "import_tensorrt", lambda: _FakeTensorRT(("PATCHES", "PROBABILITIES")))
    monkeypatch.setattr(tb, "_logger", None)
    monkeypatch.setattr(tb, "gpu_identity", lambda device=0: (HERE.gpu_name, HERE.compute_capability))
    (tmp_path / "r.onnx").write_bytes(b"x")
    with pytest.raises(MagnetError, match="FINE_AND_COARSE"):
        tb.build_engine(tmp_path / "r.onnx", tmp_path / "r.plan", spec)


# ---------------------------------------------------------------------- real TensorRT builds
def _skip_reason() -> str | None:
    if _tensorrt_missing():
        return "TensorRT is not installed (pip install tensorrt, on a machine with an NVIDIA GPU and driver)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    return None


_REASON = _skip_reason()


@pytest.fixture(scope="module")
def refiner_onnx(tmp_path_factory) -> tuple[Path, object]:
    from magnet_triton.export.onnx_export import export_onnx
    from magnet_triton.networks.weights import network_with_weights

    spec = refiner_spec(get_preset("cityscapes"), 8)
    path = tmp_path_factory.mktemp("trt") / "refiner.onnx"
    export_onnx(network_with_weights("refinement", 19, random_seed=0), spec, path)
    return path, spec


@pytest.mark.tensorrt
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_refiner_engine_matches_onnxruntime(refiner_onnx, tmp_path, precision):
    onnx_path, spec = refiner_onnx
    record = tb.build_engine(onnx_path, tmp_path / "r.plan", spec, precision=precision, max_batch=8)
    assert record.precision == precision and record.onnx_sha256 == tb.file_sha256(onnx_path)
    report = tb.compare_engine_with_onnxruntime(tmp_path / "r.plan", onnx_path, batch=3)
    assert report.passed, report.table()
    if precision == "fp16":
        assert any("Softmax" in name for name in record.pinned_layers)


@pytest.mark.tensorrt
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_second_build_reuses_the_timing_cache(refiner_onnx, tmp_path):
    onnx_path, spec = refiner_onnx
    cache = tmp_path / "timing.cache"
    first = tb.build_engine(onnx_path, tmp_path / "a.plan", spec, timing_cache_path=cache, max_batch=4)
    assert not first.timing_cache_loaded and cache.stat().st_size > 0
    second = tb.build_engine(onnx_path, tmp_path / "b.plan", spec, timing_cache_path=cache, max_batch=4)
    assert second.timing_cache_loaded


@pytest.mark.tensorrt
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_engine_recorded_for_another_version_is_refused(refiner_onnx, tmp_path):
    onnx_path, spec = refiner_onnx
    engine = tmp_path / "r.plan"
    record = tb.build_engine(onnx_path, engine, spec, max_batch=2)
    tb.load_engine(engine)  # loads as built
    write_record(dataclasses.replace(record, tensorrt_version="9.9.9"), engine)
    with pytest.raises(MagnetError, match=r"9\.9\.9"):
        tb.load_engine(engine)
