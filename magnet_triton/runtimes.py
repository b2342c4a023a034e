"""The runtime table: which engine runs the networks of a model repository, and what that implies.

An *engine* is a runtime on a device kind: ``cpu/onnxruntime`` (the exported ONNX files in onnxruntime,
inside a Python-backend runner), ``gpu/tensorrt`` (TensorRT plans on Triton's native ``tensorrt_plan``
platform), and ``gpu/torch`` / ``cpu/torch`` (our PyTorch networks in a Python-backend runner, for GPUs
without TensorRT). An entry says what export builds for each network, which file goes into a
network's version folder, which ``config.pbtxt`` fields the network models get, and which optional
packages it needs. The repository generator, the export and the command lines read it; nothing else
branches on a target name. Adding a runtime is one :class:`Runtime` in :data:`RUNTIMES` (and, for a new
kind of artifact, its builder in :mod:`magnet_triton.export.artifacts`).

Only the standard library is imported here: ``--help`` lists the engines on a bare machine.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from magnet_triton.errors import MagnetError

#: Where the GPU pipeline finds its compiled CUDA kernels, relative to its version folder.
KERNEL_DIR = "kernels"


@dataclass(frozen=True)
class DeviceKind:
    """What a device kind means for the served models, whatever the engine.

    Attributes:
        name: ``cpu`` or ``gpu``: the ``--target`` of the command line.
        instance_kind: Triton's ``instance_group.kind`` of the networks and the pipeline.
        pipeline_parameters: extra ``parameters`` of ``magnet_pipeline`` on this device.
        ships_kernels: the repository carries compiled CUDA kernels for the pipeline.
    """

    name: str
    instance_kind: str
    pipeline_parameters: Mapping[str, str] = field(default_factory=dict)
    ships_kernels: bool = False


DEVICE_KINDS: Mapping[str, DeviceKind] = MappingProxyType(
    {
        "cpu": DeviceKind("cpu", "KIND_CPU"),
        "gpu": DeviceKind(
            "gpu",
            "KIND_GPU",
            pipeline_parameters={
                # Let GPU tensors from BLS responses stay on the GPU instead of being copied to the host.
                "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
                # Compiled CUDA kernels, relative to the version folder (the serving container has no nvcc).
                "kernel_dir": KERNEL_DIR,
            },
            ships_kernels=True,
        ),
    }
)
TARGETS: tuple[str, ...] = tuple(DEVICE_KINDS)


@dataclass(frozen=True)
class Runtime:
    """One engine: a runtime on a device kind.

    Attributes:
        engine: the runtime's name within its device kind (``--engine``): ``onnxruntime``, ``tensorrt``.
        device: a key of :data:`DEVICE_KINDS`.
        artifact: what export builds for each network: ``onnx`` (the checked ONNX file),
            ``tensorrt_plan`` (an engine built from it and checked against onnxruntime) or ``torch`` (a
            network file of :mod:`magnet_triton.torch_engine`: registry name, class count, weights).
        model_file: the file name in each network's version folder.
        companion_suffixes: files that travel beside it, named by suffix (OpenVINO's ``.bin`` beside
            ``model.xml``): ``<artifact stem><suffix>`` is copied to ``<model_file stem><suffix>``.
        platform: Triton's native platform for the networks (``tensorrt_plan``), or None.
        backend: a Triton backend of its own that runs the files natively (``onnxruntime``,
            ``openvino``: in the NGC container, not in the bundled server), or None.
        runner: the module of the Python-backend runner (its ``TritonPythonModel``) otherwise.
        file_parameter: the runner's config parameter that names ``model_file``.
        option_parameters: config parameter -> the ``RepositoryOptions`` field that gives its value.
        derived_parameters: more config parameters computed from the options (a native backend's
            spelling of a setting: ``HINT_BF16`` for BF16); entries whose value is None are left out.
        precisions: the engine precisions it can build (the ONNX files are always FP32).
        requirements: modules export needs for it.
        extra: the pip extra of this package that installs them.
        description: one line for ``--help``.
    """

    engine: str
    device: str
    artifact: str
    model_file: str
    description: str
    extra: str
    platform: str | None = None
    backend: str | None = None
    runner: str | None = None
    file_parameter: str | None = None
    option_parameters: Mapping[str, str] = field(default_factory=dict)
    precisions: tuple[str, ...] = ("fp32",)
    requirements: tuple[str, ...] = ()
    companion_suffixes: tuple[str, ...] = ()
    derived_parameters: Callable[[Any], Mapping[str, str | None]] | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICE_KINDS:
            raise MagnetError(f"runtime {self.engine}: unknown device kind {self.device!r}")
        if sum(x is not None for x in (self.platform, self.backend, self.runner)) != 1:
            raise MagnetError(
                f"runtime {self.name}: give one of a Triton platform, a native backend or a Python-backend runner"
            )
        object.__setattr__(self, "option_parameters", MappingProxyType(dict(self.option_parameters)))

    @property
    def name(self) -> str:
        """``device/engine``, as records and messages spell it."""
        return f"{self.device}/{self.engine}"

    @property
    def device_kind(self) -> DeviceKind:
        return DEVICE_KINDS[self.device]

    def network_parameters(self, options: Any) -> dict[str, Any]:
        """The network models' config ``parameters`` (runners and native backends), from ``options``."""
        params: dict[str, Any] = {self.file_parameter: self.model_file} if self.file_parameter else {}
        params.update({key: getattr(options, attr) for key, attr in self.option_parameters.items()})
        if self.derived_parameters is not None:
            derived = self.derived_parameters(options)
            params.update({key: value for key, value in derived.items() if value is not None})
        return params

    def missing_requirements(self) -> list[str]:
        """The modules of :attr:`requirements` that cannot be imported here."""
        return [m for m in self.requirements if importlib.util.find_spec(m) is None]


def _torch_runtime(device: str) -> Runtime:
    """Our PyTorch networks in a Python-backend runner: FP16 and CUDA graphs on a GPU, FP32 on the CPU."""
    on_gpu = device == "gpu"
    return Runtime(
        engine="torch",
        device=device,
        artifact="torch",
        model_file="model.pt",
        runner="magnet_triton.model_repository.torch_runner_model",
        file_parameter="weights_file",
        option_parameters={"precision": "precision", "cuda_graphs": "cuda_graphs"}
        if on_gpu
        else {"precision": "precision", "threads": "onnx_threads"},
        precisions=("fp32", "fp16") if on_gpu else ("fp32",),
        requirements=("torch",),
        extra="cpu",
        description="our PyTorch networks on the instance's GPU (FP32 or FP16, optional CUDA graphs), no TensorRT"
        if on_gpu
        else "our PyTorch networks on the CPU",
    )


def _native_onnxruntime_parameters(options: Any) -> Mapping[str, str | None]:
    # Triton's onnxruntime backend: 0 or absent threads mean onnxruntime's default (every core).
    return {
        "intra_op_thread_count": str(options.onnx_threads) if options.onnx_threads else None,
        "inter_op_thread_count": "1",
    }


def _native_openvino_parameters(options: Any) -> Mapping[str, str | None]:
    # Triton's openvino backend: one stream at the latency hint (the dynamic batcher groups requests),
    # its BF16 switch, and threads when set.
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(options.onnx_threads) if options.onnx_threads else None,
        "HINT_BF16": "YES" if options.precision == "bf16" else None,
    }


#: Every engine; the first of each device kind is that kind's default. The ``triton-*`` engines serve
#: the same files on Triton's own backends, where the server has them (the NGC container does; the bundled
#: server of nvidia-pytriton has only the Python backend, so the runners stay for it): no extra process
#: hop per network call.
RUNTIMES: tuple[Runtime, ...] = (
    Runtime(
        engine="onnxruntime",
        device="cpu",
        artifact="onnx",
        model_file="model.onnx",
        runner="magnet_triton.model_repository.onnx_runner_model",
        file_parameter="onnx_file",
        option_parameters={
            "intra_op_threads": "onnx_threads",
            "allow_spinning": "onnx_spinning",
            "memory_arena": "onnx_memory_arena",
        },
        requirements=("onnxruntime",),
        extra="cpu",
        description="the ONNX files in onnxruntime, in Python-backend runners",
    ),
    Runtime(
        engine="tensorrt",
        device="gpu",
        artifact="tensorrt_plan",
        model_file="model.plan",
        platform="tensorrt_plan",
        precisions=("fp32", "fp16"),
        requirements=("tensorrt",),
        extra="gpu",
        description="TensorRT engines on Triton's tensorrt_plan platform",
    ),
    _torch_runtime("gpu"),
    _torch_runtime("cpu"),
    Runtime(
        engine="openvino",
        device="cpu",
        artifact="openvino",
        model_file="model.xml",
        companion_suffixes=(".bin",),
        runner="magnet_triton.model_repository.openvino_runner_model",
        file_parameter="openvino_file",
        option_parameters={"precision": "precision", "threads": "onnx_threads"},
        precisions=("fp32", "bf16", "int8"),
        requirements=("openvino",),
        extra="openvino",
        description="OpenVINO IR in Python-backend runners: FP32, BF16 (CPUs with AVX512-BF16 or AMX), "
        "INT8 (NNCF-calibrated backbone)",
    ),
    Runtime(
        engine="triton-onnxruntime",
        device="cpu",
        artifact="onnx",
        model_file="model.onnx",
        backend="onnxruntime",
        derived_parameters=_native_onnxruntime_parameters,
        requirements=("onnxruntime",),
        extra="cpu",
        description="the ONNX files on Triton's onnxruntime backend (NGC container; not the bundled server)",
    ),
    Runtime(
        engine="triton-openvino",
        device="cpu",
        artifact="openvino",
        model_file="model.xml",
        companion_suffixes=(".bin",),
        backend="openvino",
        derived_parameters=_native_openvino_parameters,
        precisions=("fp32", "bf16", "int8"),
        requirements=("openvino",),
        extra="openvino",
        description="OpenVINO IR on Triton's openvino backend (NGC container; not the bundled server)",
    ),
)


def engines_for(target: str) -> tuple[str, ...]:
    """The engine names of device kind ``target``, its default first."""
    return tuple(r.engine for r in RUNTIMES if r.device == target)


def get_runtime(target: str, engine: str | None = None) -> Runtime:
    """The runtime of ``target`` called ``engine`` (None: the target's default).

    Raises:
        MagnetError: an unknown target, or an engine that does not run on it; the message lists both.
    """
    if target not in DEVICE_KINDS:
        raise MagnetError(f"unknown target {target!r}; choose one of {list(TARGETS)}")
    engines = engines_for(target)
    if engine is None:
        engine = engines[0]
    for runtime in RUNTIMES:
        if runtime.device == target and runtime.engine == engine:
            return runtime
    raise MagnetError(f"unknown engine {engine!r} for target {target}; choose one of {list(engines)}")


def engine_help() -> str:
    """One line per runtime, for ``--help``."""
    return "; ".join(f"{r.name}: {r.description}" for r in RUNTIMES)
