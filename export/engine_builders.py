"""What export builds besides the ONNX files, one builder per runtime artifact (``Runtime.artifact``).

``tensorrt_plan``: an engine per network from its ONNX file, checked against onnxruntime (a shared
refiner is built once). ``torch``: each network's weights in a file of the torch engine, no ONNX.
:func:`~magnet_triton.export.artifacts.build_artifacts` calls :meth:`preflight` before any work and
:meth:`build` after the ONNX export (when the builder needs ONNX).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magnet_triton.errors import MagnetError
from magnet_triton.networks.registry import REFINER_NETWORK
from magnet_triton.networks.weights import WeightSet, WeightSource

if TYPE_CHECKING:
    from magnet_triton.export.parity import ParityReport
    from magnet_triton.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
_TIMING_CACHE = "engines/timing.cache"


@dataclass(frozen=True)
class BuildContext:
    """What the steps of one :func:`build_artifacts` share. Paths inside ``tmp`` are relative."""

    tmp: Path
    out_dir: Path
    settings: Settings
    weights: WeightSet
    backbone_spec: Any
    refiner_spec: Any
    parity: dict[str, ParityReport]
    say: Progress
    engine_kwargs: dict[str, Any]
    #: H x W x 3 uint8 images whose patches calibrate INT8 networks.
    calibration_images: tuple[Any, ...] = ()


@dataclass(frozen=True)
class _TensorRTPlans:
    """The ``tensorrt_plan`` artifact: an engine per network from its ONNX file, checked against onnxruntime."""

    needs_onnx: bool = True

    def preflight(self, say: Progress, precision: str) -> None:
        from magnet_triton.export.tensorrt_build import current_environment

        del precision  # checked against the runtime's precisions already

        env = current_environment()
        say(
            f"TensorRT {env.tensorrt_version} on {env.gpu_name} (compute capability {env.compute_capability})"
        )

    def build(
        self, context: BuildContext, backbone_onnx: Path | None, refiner_onnx: list[Path]
    ) -> tuple[Path, list[Path]]:
        from magnet_triton.io_spec import refiner_number

        assert backbone_onnx is not None  # needs_onnx
        tmp, parity, say, engine_kwargs = context.tmp, context.parity, context.say, context.engine_kwargs
        _seed_timing_cache(context.out_dir, tmp)
        backbone_engine_rel = Path("engines/backbone.plan")
        spec = context.backbone_spec
        _engine_checked(tmp, backbone_onnx, backbone_engine_rel, spec, parity, "backbone", say, engine_kwargs)
        built: dict[Path, Path] = {}
        refiner_engine_rels = []
        for i, onnx_rel in enumerate(refiner_onnx):
            rel = Path(f"engines/refiner_{refiner_number(i)}.plan")
            source_rel = next((o for o in built if _same_file(tmp / o, tmp / onnx_rel)), None)
            if source_rel is not None:
                _copy_engine(tmp / built[source_rel], tmp / rel)
            else:
                name = f"refiner_{refiner_number(i)}"
                _engine_checked(tmp, onnx_rel, rel, context.refiner_spec, parity, name, say, engine_kwargs)
                built[onnx_rel] = rel
            refiner_engine_rels.append(rel)
        return backbone_engine_rel, refiner_engine_rels


@dataclass(frozen=True)
class _TorchNetworkFiles:
    """The ``torch`` artifact: each network's weights in a file the torch engine loads; no ONNX."""

    needs_onnx: bool = False

    def preflight(self, say: Progress, precision: str) -> None:
        del say, precision  # torch is what export runs on: nothing more to check

    def build(
        self, context: BuildContext, backbone_onnx: Path | None, refiner_onnx: list[Path]
    ) -> tuple[Path, list[Path]]:
        from magnet_triton.io_spec import refiner_number
        from magnet_triton.torch_engine import save_network_file

        del backbone_onnx, refiner_onnx
        settings, tmp = context.settings, context.tmp
        (tmp / "torch").mkdir(parents=True, exist_ok=True)

        def write(name: str, source: WeightSource, rel: Path) -> None:
            context.say(f"{rel.stem}: loading {name} ({source.describe()}) for the torch engine")
            save_network_file(tmp / rel, name, settings.num_classes, source.build(name, settings.num_classes))

        backbone_rel = Path("torch/backbone.pt")
        write(settings.backbone, context.weights.backbone, backbone_rel)
        refiner_rels: list[Path] = []
        done: dict[WeightSource, Path] = {}
        for i, source in enumerate(context.weights.refiners):
            rel = Path(f"torch/refiner_{refiner_number(i)}.pt")
            if source in done:
                shutil.copyfile(tmp / done[source], tmp / rel)
            else:
                write(REFINER_NETWORK, source, rel)
                done[source] = rel
            refiner_rels.append(rel)
        return backbone_rel, refiner_rels


@dataclass(frozen=True)
class _OpenVINOModels:
    """The ``openvino`` artifact: each ONNX file as OpenVINO IR (``.xml`` + ``.bin``), the backbone
    quantized to INT8 for ``int8``; each checked against onnxruntime at the precision it will serve in
    (see :mod:`magnet_triton.openvino_engine`)."""

    needs_onnx: bool = True

    def preflight(self, say: Progress, precision: str) -> None:
        from magnet_triton.openvino_engine import check_precision, cpu_capabilities

        check_precision(precision)  # BF16 without AVX512-BF16 / AMX, or INT8 without NNCF, fail now
        say(f"OpenVINO on this CPU: {', '.join(cpu_capabilities())}; building {precision}")

    def build(
        self, context: BuildContext, backbone_onnx: Path | None, refiner_onnx: list[Path]
    ) -> tuple[Path, list[Path]]:
        from magnet_triton import openvino_engine as ovx
        from magnet_triton.io_spec import refiner_number
        from magnet_triton.networks.registry import network_entry

        assert backbone_onnx is not None  # needs_onnx
        tmp, say, precision = context.tmp, context.say, context.engine_kwargs["precision"]

        def convert(key: str, onnx_rel: Path, rel: Path, model_precision: str, model: Any = None) -> None:
            ovx.save_ir(model if model is not None else ovx.convert_onnx(tmp / onnx_rel), tmp / rel)
            report = ovx.compare_with_onnxruntime(tmp / rel, tmp / onnx_rel, model_precision)
            say(report.table())
            context.parity[f"{key}_openvino"] = report
            if not report.passed:
                message = (
                    f"{rel.name} ({model_precision}) differs from onnxruntime: {'; '.join(report.failures())}"
                )
                if model_precision == "fp32":
                    raise MagnetError(message)
                log.warning("%s (reduced precision; check the accuracy on real data)", message)

        backbone_rel = Path("openvino/backbone.xml")
        quantized = None
        if precision == "int8":
            images = context.calibration_images
            patches = ovx.calibration_patches(context.settings, images)
            say(f"backbone: calibrating INT8 on {len(patches)} patches of {len(images)} image(s)")
            quantized = ovx.quantize_int8(
                ovx.convert_onnx(tmp / backbone_onnx),
                patches,
                network_entry(context.settings.backbone).fp32_layers,
            )
        convert("backbone", backbone_onnx, backbone_rel, precision, quantized)
        # INT8 quantizes the backbone only (see openvino_engine); the refiners serve at FP32 then.
        refiner_precision = "fp32" if precision == "int8" else precision
        built: dict[Path, Path] = {}
        refiner_rels = []
        for i, onnx_rel in enumerate(refiner_onnx):
            rel = Path(f"openvino/refiner_{refiner_number(i)}.xml")
            source = next((o for o in built if _same_file(tmp / o, tmp / onnx_rel)), None)
            if source is not None:
                for suffix in (".xml", ".bin"):
                    shutil.copyfile(tmp / built[source].with_suffix(suffix), tmp / rel.with_suffix(suffix))
            else:
                convert(f"refiner_{refiner_number(i)}", onnx_rel, rel, refiner_precision)
                built[onnx_rel] = rel
            refiner_rels.append(rel)
        return backbone_rel, refiner_rels


#: What to build besides (or instead of) the ONNX files, per runtime artifact (``Runtime.artifact``);
#: ``onnx`` needs nothing more.
ENGINE_BUILDERS = {
    "tensorrt_plan": _TensorRTPlans(),
    "torch": _TorchNetworkFiles(),
    "openvino": _OpenVINOModels(),
}


def _engine_checked(
    tmp: Path,
    onnx_rel: Path,
    engine_rel: Path,
    spec: Any,
    parity: dict[str, ParityReport],
    key: str,
    say: Progress,
    engine_kwargs: dict[str, Any],
) -> None:
    from magnet_triton.export.engine_record import write_record
    from magnet_triton.export.tensorrt_build import build_engine, compare_engine_with_onnxruntime

    say(f"{key}: building TensorRT {engine_kwargs['precision']} engine (this takes minutes)")
    record = build_engine(
        tmp / onnx_rel,
        tmp / engine_rel,
        spec,
        timing_cache_path=tmp / _TIMING_CACHE,
        parity={"onnxruntime_vs_torch": parity[key].to_dict()} if key in parity else None,
        **engine_kwargs,
    )
    say(f"{key}: built in {record.build_time_s:.0f} s; checking it against onnxruntime")
    batch = min(2, engine_kwargs["max_batch"])  # > 1 exercises the dynamic batch when the profile allows
    report = compare_engine_with_onnxruntime(tmp / engine_rel, tmp / onnx_rel, batch=batch)
    say(report.table())
    parity[f"{key}_tensorrt"] = report
    record.parity = {**(record.parity or {}), "tensorrt_vs_onnxruntime": report.to_dict()}
    record.onnx_path = onnx_rel.as_posix()  # the temporary folder is renamed; keep the path relative
    write_record(record, tmp / engine_rel)
    if not report.passed:
        message = f"{engine_rel.name} differs from onnxruntime: {'; '.join(report.failures())}"
        if engine_kwargs["precision"] == "fp32":
            raise MagnetError(message)
        log.warning("%s (FP16 bounds are provisional; check the accuracy on real data)", message)


def _copy_engine(src: Path, dst: Path) -> None:
    from magnet_triton.export.engine_record import read_record, write_record

    shutil.copyfile(src, dst)
    write_record(dataclasses.replace(read_record(src), engine=dst.name), dst)


def _same_file(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def _seed_timing_cache(out_dir: Path, tmp: Path) -> None:
    previous = out_dir / _TIMING_CACHE
    if previous.is_file():
        (tmp / _TIMING_CACHE).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(previous, tmp / _TIMING_CACHE)
