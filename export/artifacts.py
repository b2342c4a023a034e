"""From checkpoints to the files a model repository is made of: ONNX graphs, engines, a manifest.

:func:`build_artifacts` loads the backbone and the refiners (or seeded random weights), exports each to
ONNX, checks it against PyTorch in onnxruntime, and for the GPU target builds TensorRT engines and
checks them against onnxruntime. Everything is written into a temporary sibling of ``out_dir`` that is
renamed into place at the end, so a folder named ``out_dir`` is always complete.

Layout of ``out_dir`` (refiner ``i`` is served as version ``i + 1`` of ``magnet_refiner``)::

    artifacts.json                     manifest: settings, files, parity, provenance
    onnx/backbone.onnx
    onnx/refiner_1.onnx ... refiner_<n>.onnx
    engines/backbone.plan (+ .json)    GPU target only
    engines/refiner_1.plan (+ .json) ...
    engines/timing.cache               reused by the next build into the same out_dir
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magnet_triton.errors import MagnetError
from magnet_triton.export.engine_builders import ENGINE_BUILDERS, BuildContext, Progress
from magnet_triton.export.onnx_export import NETWORK_METADATA_KEY
from magnet_triton.export.staging import staged_output
from magnet_triton.networks.registry import REFINER_NETWORK
from magnet_triton.networks.weights import WeightSource, weight_set
from magnet_triton.runtimes import RUNTIMES, Runtime, get_runtime

if TYPE_CHECKING:
    from magnet_triton.export.parity import ParityReport
    from magnet_triton.settings import Settings

log = logging.getLogger(__name__)

MANIFEST = "artifacts.json"


@dataclass
class Artifacts:
    """What :func:`build_artifacts` wrote. Paths are absolute, inside ``out_dir``.

    ``refiner_onnx[i]`` and ``refiner_engines[i]`` are refiner ``i`` (Triton version ``i + 1``). The
    engine files are what a runtime other than ``cpu/onnxruntime`` serves: TensorRT plans, or the torch
    engine's network files (then no ONNX is exported: ``backbone_onnx`` is None).
    ``parity`` maps ``backbone``, ``refiner_<v>`` (onnxruntime vs PyTorch) and, for TensorRT,
    ``backbone_tensorrt``, ``refiner_<v>_tensorrt`` (engine vs onnxruntime) to their reports.
    """

    out_dir: Path
    settings: Settings
    target: str
    precision: str
    max_batch: int
    backbone_onnx: Path | None
    refiner_onnx: list[Path]
    backbone_engine: Path | None = None
    refiner_engines: list[Path] = field(default_factory=list)
    parity: dict[str, ParityReport] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    engine: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest: JSON-able, paths relative to ``out_dir``."""

        def rel(p: Path | None) -> str | None:
            return None if p is None else p.relative_to(self.out_dir).as_posix()

        return {
            "settings": self.settings.to_dict(),
            "target": self.target,
            "engine": self.engine,
            "precision": self.precision,
            "max_batch": self.max_batch,
            "backbone_onnx": rel(self.backbone_onnx),
            "refiner_onnx": [rel(p) for p in self.refiner_onnx],
            "backbone_engine": rel(self.backbone_engine),
            "refiner_engines": [rel(p) for p in self.refiner_engines],
            "parity": {k: r.to_dict() for k, r in self.parity.items()},
            "provenance": self.provenance,
        }

    def served_files(self, runtime: Runtime) -> tuple[Path, list[Path]]:
        """The files ``runtime`` serves: (backbone, refiners in version order).

        Raises:
            MagnetError: these artifacts were not built for that runtime's kind of file.
        """
        if runtime.artifact == "onnx" and self.backbone_onnx is not None:
            return self.backbone_onnx, list(self.refiner_onnx)
        built_for = f"{self.target}/{self.engine}"
        if runtime.artifact == "onnx" or self.backbone_engine is None or built_for != runtime.name:
            raise MagnetError(
                f"{self.out_dir} holds the artifacts of {built_for}, not the {runtime.artifact} files "
                f"{runtime.name} serves: build the artifacts for it"
            )
        return self.backbone_engine, list(self.refiner_engines)


def load_artifacts(out_dir: str | os.PathLike[str]) -> Artifacts:
    """Read back what :func:`build_artifacts` wrote into ``out_dir``."""
    from magnet_triton.export.parity import ParityReport
    from magnet_triton.settings import settings_from_dict

    root = Path(out_dir).absolute()
    try:
        data = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise MagnetError(f"{root} holds no {MANIFEST}: build it with the export command first") from None
    except (OSError, ValueError) as e:
        raise MagnetError(f"cannot read {root / MANIFEST}: {e}") from e
    return Artifacts(
        out_dir=root,
        settings=settings_from_dict(data["settings"]),
        target=data["target"],
        precision=data["precision"],
        max_batch=int(data["max_batch"]),
        backbone_onnx=root / data["backbone_onnx"] if data.get("backbone_onnx") else None,
        refiner_onnx=[root / p for p in data["refiner_onnx"]],
        backbone_engine=root / data["backbone_engine"] if data.get("backbone_engine") else None,
        refiner_engines=[root / p for p in data.get("refiner_engines", [])],
        parity={k: ParityReport.from_dict(v) for k, v in data.get("parity", {}).items()},
        provenance=data.get("provenance", {}),
        engine=data.get("engine"),
    )


def build_artifacts(
    settings: Settings,
    *,
    backbone_checkpoint: str | os.PathLike[str] | None,
    refiner_checkpoints: Sequence[str | os.PathLike[str]],
    random_seed: int | None,
    out_dir: Path,
    target: str = "cpu",
    engine: str | None = None,
    precision: str = "fp32",
    max_batch: int = 16,
    progress: Progress | None = None,
    opset: int = 17,
    parity_batch: int = 1,
    parity_fp64: bool = False,
    workspace_bytes: int | None = None,
    calibration_images: Sequence[str | os.PathLike[str]] = (),
) -> Artifacts:
    """Export every network of ``settings`` to ONNX, and build what the runtime serves, into ``out_dir``.

    Args:
        settings: the backbone name, class count, input size and refiner count come from here.
        backbone_checkpoint, refiner_checkpoints, random_seed: the weights, as
            :func:`~magnet_triton.networks.weights.weight_set` takes them.
        out_dir: result folder; replaced if it holds earlier artifacts, refused if it holds other files.
        target, engine: the runtime (:func:`~magnet_triton.runtimes.get_runtime`); ``cpu`` serves the
            ONNX files, ``gpu`` (TensorRT) also builds engines and checks them against onnxruntime.
        precision: one of the runtime's precisions (the ONNX files are always FP32).
        max_batch: largest batch of both networks (Triton ``max_batch_size``, engine profile max).
        progress: called with one line per step; default: log at INFO.
        parity_batch: patches per parity check (the backbones are slow on CPUs).
        parity_fp64: also measure PyTorch FP32 against FP64 (doubles the check time).
        calibration_images: image files whose patches calibrate INT8 networks (``cpu/openvino``
            ``int8``); none: the sample street scene at the preset's finest scale.

    Raises:
        MagnetError: bad arguments, unreadable checkpoints, unwritable ``out_dir``, a missing engine
            dependency or GPU, or an export whose parity bounds fail. Nothing is left at ``out_dir`` then.
    """
    from magnet_triton.io_spec import backbone_spec, refiner_spec

    say = progress or (lambda message: log.info("%s", message))
    runtime = get_runtime(target, engine)
    if precision not in runtime.precisions:
        able = [r.name for r in RUNTIMES if precision in r.precisions]
        raise MagnetError(
            f"{runtime.name} builds {list(runtime.precisions)} networks, not {precision!r}"
            + (f"; {precision} needs {' or '.join(able)}" if able else "")
        )
    weights = weight_set(settings, backbone_checkpoint, refiner_checkpoints, random_seed)
    calibration = _calibration_images(settings, calibration_images) if precision == "int8" else ()
    builder = ENGINE_BUILDERS.get(runtime.artifact)
    if builder is not None:
        builder.preflight(say, precision)  # fail now, not after minutes of export

    out_dir = Path(out_dir).absolute()
    with staged_output(out_dir, MANIFEST) as staging:
        tmp = staging.output
        parity: dict[str, ParityReport] = {}
        context = BuildContext(
            tmp=tmp,
            out_dir=out_dir,
            settings=settings,
            weights=weights,
            backbone_spec=backbone_spec(settings, max_batch),
            refiner_spec=refiner_spec(settings, max_batch),
            parity=parity,
            say=say,
            engine_kwargs={"precision": precision, "max_batch": max_batch}
            | ({"workspace_bytes": workspace_bytes} if workspace_bytes is not None else {}),
            calibration_images=calibration,
        )
        backbone_rel, refiner_rels = None, []
        if builder is None or builder.needs_onnx:
            backbone_rel, refiner_rels = _export_all_checked(context, opset, parity_batch, parity_fp64)
        backbone_engine_rel, refiner_engine_rels = None, []
        if builder is not None:
            backbone_engine_rel, refiner_engine_rels = builder.build(context, backbone_rel, refiner_rels)

        artifacts = Artifacts(
            out_dir=out_dir,
            settings=settings,
            target=runtime.device,
            precision=precision,
            max_batch=max_batch,
            backbone_onnx=out_dir / backbone_rel if backbone_rel else None,
            refiner_onnx=[out_dir / r for r in refiner_rels],
            backbone_engine=out_dir / backbone_engine_rel if backbone_engine_rel else None,
            refiner_engines=[out_dir / r for r in refiner_engine_rels],
            parity=parity,
            provenance=_provenance(weights),
            engine=runtime.engine,
        )
        (tmp / MANIFEST).write_text(json.dumps(artifacts.to_dict(), indent=2) + "\n")
    say(f"artifacts ready in {out_dir}")
    return artifacts


# ---------------------------------------------------------------------- steps
def _export_all_checked(
    context: BuildContext, opset: int, parity_batch: int, parity_fp64: bool
) -> tuple[Path, list[Path]]:
    """Every network to ONNX, each checked against PyTorch; a shared refiner is exported once."""
    from magnet_triton.io_spec import refiner_number

    settings, weights, tmp = context.settings, context.weights, context.tmp
    export = {
        "settings": settings,
        "say": context.say,
        "opset": opset,
        "batch": parity_batch,
        "fp64": parity_fp64,
    }
    backbone_rel = Path("onnx/backbone.onnx")
    context.parity["backbone"] = _export_checked(
        settings.backbone, weights.backbone, context.backbone_spec, tmp / backbone_rel, **export
    )
    refiner_rels: list[Path] = []
    done: dict[WeightSource, Path] = {}  # first ONNX exported from each source (shared refiners)
    for i, source in enumerate(weights.refiners):
        rel = Path(f"onnx/refiner_{refiner_number(i)}.onnx")
        if source in done:
            context.say(
                f"refiner {i + 1}/{len(weights.refiners)}: same weights as {done[source].name}, copying"
            )
            shutil.copyfile(tmp / done[source], tmp / rel)
        else:
            context.parity[f"refiner_{refiner_number(i)}"] = _export_checked(
                REFINER_NETWORK, source, context.refiner_spec, tmp / rel, **export
            )
            done[source] = rel
        refiner_rels.append(rel)
    return backbone_rel, refiner_rels


def _export_checked(
    name: str,
    source: WeightSource,
    spec: Any,
    path: Path,
    *,
    settings: Settings,
    say: Progress,
    opset: int,
    batch: int,
    fp64: bool,
) -> ParityReport:
    from magnet_triton.export.onnx_export import export_onnx
    from magnet_triton.export.parity import parity_report

    say(f"{path.stem}: loading {name} ({source.describe()})")
    model = source.build(name, settings.num_classes)
    say(f"{path.stem}: exporting ONNX (opset {opset})")
    export_onnx(model, spec, path, opset=opset, metadata={NETWORK_METADATA_KEY: name})
    say(f"{path.stem}: checking onnxruntime against PyTorch")
    report = parity_report(name, settings.num_classes, path, model, batch=batch, fp64=fp64, seed=0)
    say(report.table())
    if not report.passed:
        raise MagnetError(f"{path.name} differs from PyTorch: {'; '.join(report.failures())}")
    return report


def _calibration_images(settings: Settings, paths: Sequence[str | os.PathLike[str]]) -> tuple[Any, ...]:
    """The calibration images, read (and refused with the decoder's messages) before any export work."""
    from magnet_triton.imageio import read_image
    from magnet_triton.sample import street_scene

    if not paths:
        width, height = settings.scales[-1]
        return (street_scene(width, height, seed=0),)
    return tuple(read_image(path) for path in paths)


def _provenance(weights: Any) -> dict[str, Any]:
    from magnet_triton import __version__

    return {
        "random_weights": weights.random,
        "networks": weights.record(),
        "magnet_triton_version": __version__,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
