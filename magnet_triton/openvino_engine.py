"""The ``cpu/openvino`` engine: the exported networks in OpenVINO, in FP32, BF16 or INT8.

One home for what OpenVINO means here, used by the export (conversion, INT8 calibration, parity) and by
the served runner (:mod:`magnet_triton.model_repository.openvino_runner_model`):

- **FP32**: the ONNX graph converted to OpenVINO IR (``model.xml`` + ``model.bin``, weights kept FP32).
- **BF16**: the same IR, compiled with ``INFERENCE_PRECISION_HINT=bf16``. Only CPUs with AVX512-BF16 or
  AMX run it natively; OpenVINO reports that as ``BF16`` in the CPU's ``OPTIMIZATION_CAPABILITIES``, and
  asking for BF16 anywhere else is refused (on export and again when a server loads the model, since
  the serving machine may differ from the exporting one).
- **INT8**: the backbone quantised by NNCF post-training quantization, calibrated on normalised patches
  cut from images the user gives (the sample scene by default). The refiners stay FP32: their inputs are
  the probability maps of earlier stages, which only a full MagNet run produces, and they are a small
  share of the time (the backbone is 85 % of it). The registry's FP32-pinned layers (the OCR attention,
  softmax) are left out of the quantization, as TensorRT keeps them FP32 in FP16 engines.

Threads: an instance runs with ``INFERENCE_NUM_THREADS`` (the cores it may use, divided among the
instances of the model, unless the config says) and the ``LATENCY`` hint (one stream): the dynamic
batcher already groups requests, so one request batch at a time on all threads is what is wanted.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from magnet_triton.errors import MagnetError

if TYPE_CHECKING:
    import openvino as ov

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
#: OpenVINO's ``INFERENCE_PRECISION_HINT`` per precision: INT8 models carry their own quantized layers
#: and run the rest in FP32.
_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
#: The CPU capability (``OPTIMIZATION_CAPABILITIES``) each precision needs.
_CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise MagnetError(
            "the cpu/openvino engine needs the openvino package: pip install 'magnet-triton[openvino]'"
        ) from None
    return openvino


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> tuple[str, ...]:
    """What OpenVINO says this CPU can run natively: ``('FP32', 'INT8', 'BF16', ...)``."""
    return tuple(_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def check_precision(precision: str) -> None:
    """Refuse a precision this machine cannot run (or whose packages are missing), saying why.

    Raises:
        MagnetError: an unknown precision; BF16 on a CPU without AVX512-BF16 or AMX; INT8 without NNCF.
    """
    if precision not in PRECISIONS:
        raise MagnetError(f"cpu/openvino runs {list(PRECISIONS)}, not {precision!r}")
    capabilities = cpu_capabilities()
    if _CAPABILITY[precision] not in capabilities:
        need = "AVX512-BF16 or AMX" if precision == "bf16" else _CAPABILITY[precision]
        raise MagnetError(
            f"this CPU cannot run {precision} networks: it has no {need} (OpenVINO reports "
            f"{list(capabilities)}); use fp32 or int8, or export on and for a CPU that has it"
        )
    if precision == "int8":
        try:
            import nncf  # noqa: F401
        except ImportError:
            raise MagnetError(
                "INT8 export calibrates with NNCF, which is not installed: pip install 'magnet-triton[openvino]'"
            ) from None


def compile_model(path: str | os.PathLike[str], precision: str, threads: int) -> Any:
    """The IR (or ONNX) file at ``path`` compiled for this CPU: a callable ``ov.CompiledModel``.

    Raises:
        MagnetError: as :func:`check_precision`, or a file OpenVINO cannot read.
    """
    check_precision(precision)
    ov = _openvino()
    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": _PRECISION_HINT[precision],
    }
    try:
        return core.compile_model(str(path), "CPU", config)
    except RuntimeError as e:
        raise MagnetError(f"OpenVINO cannot compile {path}: {str(e).splitlines()[0]}") from e


def convert_onnx(onnx_path: Path) -> ov.Model:
    """The ONNX file as an OpenVINO model, FP32 weights."""
    return _openvino().convert_model(str(onnx_path))


def save_ir(model: ov.Model, xml_path: Path) -> Path:
    """Write ``model`` as ``xml_path`` and its ``.bin`` beside it, weights as they are (no FP16 compression)."""
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    _openvino().save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


#: The registry's FP32 patterns are TensorRT's: ``type:X`` names a layer type. Their OpenVINO op types:
_LAYER_TYPES = {"SOFTMAX": {"Softmax", "SoftMax"}, "MATRIX_MULTIPLY": {"MatMul"}}


def ignored_nodes(model: ov.Model, patterns: Iterable[str]) -> list[str]:
    """Names of the nodes of ``model`` that the registry's FP32 patterns name: ``type:X`` by op type,
    anything else by ``re.search`` on the node name (the ONNX node names survive the conversion)."""
    patterns = list(patterns)
    types = set().union(*(_LAYER_TYPES.get(p[5:], {p[5:]}) for p in patterns if p.startswith("type:")))
    names = [re.compile(p) for p in patterns if not p.startswith("type:")]
    return [
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() in types or any(p.search(op.get_friendly_name()) for p in names)
    ]


def quantize_int8(model: ov.Model, calibration: Sequence[np.ndarray], keep_fp32: Iterable[str]) -> ov.Model:
    """``model`` with INT8 weights and activations, calibrated on ``calibration`` (each 1 x ... float32).

    ``keep_fp32``: patterns of node names left unquantized (the registry's ``fp32_layers``).
    """
    import nncf

    if not calibration:
        raise MagnetError("INT8 calibration needs at least one input")
    names = ignored_nodes(model, keep_fp32)
    scope = nncf.IgnoredScope(names=names, validate=False) if names else None
    log.info("quantizing to INT8 on %d calibration inputs, %d nodes kept FP32", len(calibration), len(names))
    return nncf.quantize(
        model,
        nncf.Dataset(list(calibration)),
        subset_size=len(calibration),
        preset=nncf.QuantizationPreset.MIXED,
        ignored_scope=scope,
    )


# ---------------------------------------------------------------------- calibration and parity
#: Parity bounds against PyTorch FP32 per precision (probabilities). FP32: the shared FP32 bounds. BF16
#: keeps 8 mantissa bits (FP16 has 10): the FP16 engines' bounds, widened 4x. INT8: measured on the seeded
#: random weights, whose near-uniform outputs flip classes at the smallest change (hrnet18+ocr, 256x128:
#: max 0.18, agreement 85.8 %); reduced precisions are reported and warned about, never refused, since
#: only real weights and data tell what users lose.
def parity_bounds(precision: str) -> Any:
    from magnet_triton.export.parity import DEFAULT_BOUNDS, ParityBounds

    return {
        "fp32": DEFAULT_BOUNDS,
        "bf16": ParityBounds(max_abs=2e-1, mean_abs=4e-3, argmax_agreement=0.95),
        "int8": ParityBounds(max_abs=5e-1, mean_abs=3e-2, argmax_agreement=0.8),
    }[precision]


def calibration_patches(settings: Any, images: Sequence[np.ndarray], limit: int = 16) -> list[np.ndarray]:
    """Backbone inputs as a MagNet run makes them: every patch of every scale of each image, normalised;
    at most ``limit``, spread evenly over that list (coarse and fine scales both). Each 1 x 3 x h x w."""
    from magnet_triton.networks.registry import network_entry
    from magnet_triton.ops.geometry import patch_grid
    from magnet_triton.ops.patches import cut_patches
    from magnet_triton.ops.resize import resize_image

    normalization = network_entry(settings.backbone).normalization
    jobs = [
        (image, size, box)
        for image in images
        for size in settings.scales
        for box in patch_grid(size, settings.crop_size)
    ]
    if not jobs:
        raise MagnetError("INT8 calibration needs at least one image")
    picked = [
        jobs[i] for i in np.unique(np.linspace(0, len(jobs) - 1, min(limit, len(jobs))).round().astype(int))
    ]
    patches = []
    scaled: dict[tuple[int, tuple[int, int]], np.ndarray] = {}
    for image, size, box in picked:
        key = (id(image), size)
        if key not in scaled:
            scaled[key] = resize_image(image, size)
        patches.append(cut_patches(scaled[key], [box], settings.input_size, normalization).numpy())
    return patches


def compare_with_onnxruntime(
    model_path: Path, onnx_path: Path, precision: str, *, batch: int = 1, seed: int = 0
) -> Any:
    """The OpenVINO model at ``model_path``, compiled at ``precision``, against onnxruntime on the ONNX
    graph it came from: a ``ParityReport`` (backend ``openvino-<precision>``, the bounds of
    :func:`parity_bounds`; see :func:`magnet_triton.export.parity.compare_with_onnxruntime`)."""
    from magnet_triton.export import parity

    compiled = compile_model(model_path, precision, len(os.sched_getaffinity(0)))
    return parity.compare_with_onnxruntime(
        onnx_path,
        lambda inputs: compiled(inputs)[0],
        backend=f"openvino-{precision}",
        bounds=parity_bounds(precision),
        batch=batch,
        seed=seed,
    )
