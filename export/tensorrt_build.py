"""TensorRT 10 engines from the exported ONNX graphs, each with a JSON record beside it.

Builds, loads and runs engines; the record and the compatibility check that :func:`load_engine` applies
before deserialising live in :mod:`magnet_triton.export.engine_record`.

TensorRT, torch and pycuda are imported inside the functions that need them: this module and the
layer-pinning rules are usable (and tested) on machines without a GPU.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magnet_triton.errors import MagnetError
from magnet_triton.export.engine_record import (
    DEFAULT_WORKSPACE_BYTES,
    BuildEnvironment,
    EngineRecord,
    atomic_write,
    check_compatibility,
    file_sha256,
    read_record,
    write_record,
)
from magnet_triton.export.onnx_export import NETWORK_METADATA_KEY
from magnet_triton.export.parity import ParityBounds

if TYPE_CHECKING:
    import numpy as np

    from magnet_triton.export.parity import ParityReport
    from magnet_triton.io_spec import ModelSpec

log = logging.getLogger(__name__)

TENSORRT_MISSING = (
    "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU and driver), or use --target cpu"
)
PRECISIONS = ("fp32", "fp16")
#: Parity bounds of FP16 engines. Half precision keeps ~3 decimal digits; these are first guesses, to
#: be tightened with measurements on real checkpoints.
FP16_BOUNDS = ParityBounds(max_abs=5e-2, mean_abs=1e-3, argmax_agreement=0.99)

_logger = None


def import_tensorrt():
    """The ``tensorrt`` module, or MagnetError :data:`TENSORRT_MISSING`."""
    try:
        import tensorrt
    except ImportError as e:
        raise MagnetError(TENSORRT_MISSING) from e
    return tensorrt


def _trt_logger(trt):
    # One logger for every builder and runtime of the process: TensorRT keeps the first one it sees.
    global _logger
    if _logger is None:
        _logger = trt.Logger(trt.Logger.WARNING)
    return _logger


# ---------------------------------------------------------------------- environment
def current_environment(device: int = 0) -> BuildEnvironment:
    """The installed TensorRT and CUDA device ``device``, via torch.cuda or else pycuda."""
    trt = import_tensorrt()
    name, capability = gpu_identity(device)
    return BuildEnvironment(str(trt.__version__), name, capability)


def gpu_identity(device: int = 0) -> tuple[str, str]:
    """(GPU name, "major.minor" compute capability) of CUDA device ``device``."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            return torch.cuda.get_device_name(device), f"{major}.{minor}"
    except ImportError:
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        return dev.name(), f"{major}.{minor}"
    except Exception as e:  # no pycuda, no driver or no such device: all mean "no usable GPU"
        raise MagnetError(
            f"no CUDA GPU {device} found (checked torch.cuda and pycuda: {type(e).__name__}); "
            "TensorRT engines must be built on the GPU that will run them, or use --target cpu"
        ) from e


# ---------------------------------------------------------------------- precision pinning
def select_fp32_layers(layers: Iterable[tuple[str, str]], patterns: Sequence[str]) -> list[str]:
    """Names of the layers that ``patterns`` pin to FP32.

    Args:
        layers: (layer name, layer type name) pairs, the type as ``trt.LayerType`` spells it ("SOFTMAX").
        patterns: ``type:NAME`` (case-insensitive type match) or a regular expression searched,
            case-insensitively, in the layer name.
    """
    types = {p[5:].strip().upper() for p in patterns if p.lower().startswith("type:")}
    try:
        regexes = [re.compile(p, re.IGNORECASE) for p in patterns if not p.lower().startswith("type:")]
    except re.error as e:
        raise MagnetError(f"bad FP32 layer pattern: {e}") from e
    return [
        name
        for name, type_name in layers
        if type_name.upper() in types or any(r.search(name) for r in regexes)
    ]


def _enum_name(value: Any) -> str:
    # pybind11 enums have ``.name``; fall back to "LayerType.SOFTMAX" -> "SOFTMAX".
    return str(getattr(value, "name", None) or str(value).rsplit(".", 1)[-1])


def _pin_fp32(trt, network, patterns: Sequence[str]) -> list[str]:
    """Set precision and output types of the matching layers to FP32; returns their names.

    Layers with a non-float output (shape arithmetic, indices) are skipped: TensorRT rejects a float
    type constraint on them, and they are exact anyway.
    """
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    floats = (trt.float32, trt.float16)
    eligible = {
        layer.name: layer
        for layer in layers
        if layer.type not in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE)
        and layer.num_outputs > 0
        and all(layer.get_output(j).dtype in floats for j in range(layer.num_outputs))
    }
    chosen = select_fp32_layers(((n, _enum_name(lay.type)) for n, lay in eligible.items()), patterns)
    for name in chosen:
        layer = eligible[name]
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
    log.info("pinned %d of %d layers to FP32", len(chosen), len(layers))
    return chosen


def registry_fp32_layers(onnx_path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The FP32 patterns of the network an exported ONNX file holds (``NetworkEntry.fp32_layers``).

    Raises:
        MagnetError: the file does not name its network; pass ``fp32_layers`` explicitly then.
    """
    import onnx

    from magnet_triton.networks.registry import network_entry

    proto = onnx.load(str(onnx_path), load_external_data=False)
    names = [p.value for p in proto.metadata_props if p.key == NETWORK_METADATA_KEY]
    if not names:
        raise MagnetError(
            f"{onnx_path} does not say which network it holds (no {NETWORK_METADATA_KEY} metadata): "
            "give fp32_layers for its FP16 engine"
        )
    return network_entry(names[0]).fp32_layers


# ---------------------------------------------------------------------- build and load
def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    spec: ModelSpec,
    *,
    precision: str = "fp32",
    min_batch: int = 1,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    fp32_layers: Sequence[str] | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    timing_cache_path: str | os.PathLike[str] | None = None,
    parity: Mapping[str, Any] | None = None,
    device: int = 0,
) -> EngineRecord:
    """Build a serialized engine for ``spec``'s network from ``onnx_path``; write it and its record.

    The optimisation profile spans batches ``min_batch``..``max_batch`` (default: the spec's
    ``max_batch_size``), tuned for ``opt_batch`` (default ``max_batch``). ``fp16`` enables half
    precision and obeys FP32 constraints on ``fp32_layers`` (default: the registry's ``fp32_layers`` of
    the network the ONNX file names in its metadata); ``fp32`` also turns TF32 off, which
    TensorRT enables by default and which would not meet the FP32 parity bounds. A timing cache at
    ``timing_cache_path`` is read when it exists and written back afterwards, so rebuilds skip kernel
    timing. ``parity`` figures (e.g. ``ParityReport.to_dict()``) go into the record as given.
    """
    if precision not in PRECISIONS:
        raise MagnetError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if workspace_bytes < 1:
        raise MagnetError(f"workspace_bytes must be positive, got {workspace_bytes}")
    shapes = spec.batch_profile(min_batch, opt_batch, max_batch)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise MagnetError(f"no ONNX file at {onnx_path}")
    trt = import_tensorrt()
    env = current_environment(device)
    logger = _trt_logger(trt)
    if fp32_layers is None and precision == "fp16":
        fp32_layers = registry_fp32_layers(onnx_path)

    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: every network has an explicit batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise MagnetError(f"TensorRT cannot parse {onnx_path}: {errors}")
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if inputs != spec.input_names or outputs != spec.output_names:
        raise MagnetError(
            f"{onnx_path} has I/O {inputs} -> {outputs}; {spec.name} needs {spec.input_names} -> {spec.output_names}"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    pinned: list[str] = []
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_fp32(trt, network, fp32_layers)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)

    cache_path = Path(timing_cache_path) if timing_cache_path else None
    cache_loaded = False
    if cache_path is not None:
        blob = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(blob) if blob else None
        cache_loaded = cache is not None and bool(config.set_timing_cache(cache, ignore_mismatch=False))
        if not cache_loaded:
            if blob:
                log.warning("timing cache %s is for another GPU or TensorRT; starting a new one", cache_path)
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    log.info(
        "building %s engine for %s (%s, batch %s) on %s",
        precision,
        spec.name,
        onnx_path.name,
        shapes,
        env.gpu_name,
    )
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_time = time.perf_counter() - start
    if serialized is None:
        raise MagnetError(f"TensorRT failed to build an engine from {onnx_path}; its log above says why")
    atomic_write(engine_path, memoryview(serialized))
    if cache_path is not None:
        atomic_write(cache_path, memoryview(config.get_timing_cache().serialize()))

    record = EngineRecord(
        engine=engine_path.name,
        model=spec.name,
        tensorrt_version=env.tensorrt_version,
        gpu_name=env.gpu_name,
        compute_capability=env.compute_capability,
        precision=precision,
        profile={
            n: {"min": list(lo), "opt": list(opt), "max": list(hi)} for n, (lo, opt, hi) in shapes.items()
        },
        onnx_path=str(onnx_path),
        onnx_sha256=file_sha256(onnx_path),
        build_time_s=round(build_time, 3),
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        workspace_bytes=int(workspace_bytes),
        fp32_layers=list(fp32_layers) if precision == "fp16" else [],
        pinned_layers=pinned,
        timing_cache=str(cache_path) if cache_path else None,
        timing_cache_loaded=cache_loaded,
        parity=dict(parity) if parity is not None else None,
    )
    write_record(record, engine_path)
    log.info("built %s in %.1f s", engine_path, build_time)
    return record


@dataclass
class LoadedEngine:
    """A deserialized engine with the runtime that must outlive it and its build record."""

    engine: Any
    runtime: Any
    record: EngineRecord
    device: int = 0


def load_engine(engine_path: str | os.PathLike[str], *, device: int = 0) -> LoadedEngine:
    """Deserialize ``engine_path`` after checking its record against this TensorRT and GPU."""
    record = read_record(engine_path)
    trt = import_tensorrt()
    check_compatibility(record, current_environment(device), str(engine_path))
    runtime = trt.Runtime(_trt_logger(trt))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise MagnetError(f"TensorRT could not deserialize {engine_path}; rebuild it")
    return LoadedEngine(engine, runtime, record, device)


def run_engine(loaded: LoadedEngine, inputs: np.ndarray) -> np.ndarray:
    """Run a one-input engine on B x ... float32 ``inputs``; returns its first output as float32.

    Buffers are torch CUDA tensors; the engine runs on its own stream, ordered after the copies.
    """
    import torch

    trt = import_tensorrt()
    engine = loaded.engine
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    in_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    out_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    torch_types = {trt.float32: torch.float32, trt.float16: torch.float16}
    device = torch.device("cuda", loaded.device)
    context = engine.create_execution_context()
    x = torch.from_numpy(inputs).to(device=device, dtype=torch.float32).contiguous()
    if not context.set_input_shape(in_names[0], tuple(x.shape)):
        raise MagnetError(
            f"input shape {tuple(x.shape)} is outside the engine's profile {loaded.record.profile}"
        )
    context.set_tensor_address(in_names[0], x.data_ptr())
    outs = {}
    for name in out_names:
        dtype = torch_types[engine.get_tensor_dtype(name)]
        outs[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device=device)
        context.set_tensor_address(name, outs[name].data_ptr())
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    if not context.execute_async_v3(stream.cuda_stream):
        raise MagnetError(f"TensorRT failed to run {loaded.record.engine}")
    stream.synchronize()
    return outs[out_names[0]].float().cpu().numpy()


def compare_engine_with_onnxruntime(
    engine_path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    *,
    batch: int = 2,
    seed: int = 0,
    bounds: ParityBounds | None = None,
    device: int = 0,
) -> ParityReport:
    """Engine against onnxruntime on the same realistic inputs (see ``parity.compare_with_onnxruntime``).

    ``bounds`` default to the FP32 ones for FP32 engines and :data:`FP16_BOUNDS` for FP16 engines.
    """
    from magnet_triton.export.parity import DEFAULT_BOUNDS, compare_with_onnxruntime

    loaded = load_engine(engine_path, device=device)
    if bounds is None:
        bounds = FP16_BOUNDS if loaded.record.precision == "fp16" else DEFAULT_BOUNDS
    return compare_with_onnxruntime(
        onnx_path,
        lambda inputs: run_engine(loaded, inputs),
        backend=f"tensorrt-{loaded.record.precision}",
        bounds=bounds,
        batch=batch,
        seed=seed,
    )
