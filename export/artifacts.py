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

import dataclasses
import datetime
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magnet_triton.errors import MagnetError
from magnet_triton.export.staging import make_staging_dir, move_into_place

if TYPE_CHECKING:
    from torch import nn

    from magnet_triton.export.parity import ParityReport
    from magnet_triton.settings import Settings

log = logging.getLogger(__name__)

MANIFEST = "artifacts.json"
TARGETS = ("cpu", "gpu")
_TIMING_CACHE = "engines/timing.cache"

Progress = Callable[[str], None]


@dataclass
class Artifacts:
    """What :func:`build_artifacts` wrote. Paths are absolute, inside ``out_dir``.

    ``refiner_onnx[i]`` and ``refiner_engines[i]`` are refiner ``i`` (Triton version ``i + 1``).
    ``parity`` maps ``backbone``, ``refiner_<v>`` (onnxruntime vs PyTorch) and, on the GPU target,
    ``backbone_tensorrt``, ``refiner_<v>_tensorrt`` (engine vs onnxruntime) to their reports.
    """

    out_dir: Path
    settings: Settings
    target: str
    precision: str
    max_batch: int
    backbone_onnx: Path
    refiner_onnx: list[Path]
    backbone_engine: Path | None = None
    refiner_engines: list[Path] = field(default_factory=list)
    parity: dict[str, ParityReport] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The manifest: JSON-able, paths relative to ``out_dir``."""

        def rel(p: Path | None) -> str | None:
            return None if p is None else p.relative_to(self.out_dir).as_posix()

        return {
            "settings": self.settings.to_dict(),
            "target": self.target,
            "precision": self.precision,
            "max_batch": self.max_batch,
            "backbone_onnx": rel(self.backbone_onnx),
            "refiner_onnx": [rel(p) for p in self.refiner_onnx],
            "backbone_engine": rel(self.backbone_engine),
            "refiner_engines": [rel(p) for p in self.refiner_engines],
            "parity": {k: r.to_dict() for k, r in self.parity.items()},
            "provenance": self.provenance,
        }


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
        backbone_onnx=root / data["backbone_onnx"],
        refiner_onnx=[root / p for p in data["refiner_onnx"]],
        backbone_engine=root / data["backbone_engine"] if data.get("backbone_engine") else None,
        refiner_engines=[root / p for p in data.get("refiner_engines", [])],
        parity={k: ParityReport.from_dict(v) for k, v in data.get("parity", {}).items()},
        provenance=data.get("provenance", {}),
    )


def network_with_weights(
    name: str,
    num_classes: int,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    random_seed: int | None = None,
) -> nn.Module:
    """Network ``name`` in eval mode with the checkpoint's weights (strict), or seeded random ones."""
    from magnet_triton.networks import build_network

    model = build_network(name, num_classes)
    if checkpoint is not None:
        from magnet_triton.networks.checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    elif random_seed is not None:
        from magnet_triton.networks.checkpoint import random_state_dict

        model.load_state_dict(random_state_dict(name, num_classes, int(random_seed)))
    else:
        raise MagnetError(f"{name}: give a checkpoint or a random-weights seed")
    return model.eval()


def refiner_sources(
    refiner_checkpoints: Sequence[Path], n_refiners: int, random_seed: int | None
) -> list[dict[str, Any]]:
    """One weights source per refiner: ``{"checkpoint": Path}`` or ``{"seed": int}``.

    One file per scale transition (``n_refiners`` files), or one file shared by every refiner, or none
    with a seed (refiner ``i`` then gets seed ``random_seed + 1 + i``, so versions differ).
    """
    files = [Path(p) for p in refiner_checkpoints]
    if not files:
        if random_seed is None:
            raise MagnetError(
                f"no refiner checkpoint: give {n_refiners} refiner file(s) or one shared one, "
                "or use random weights"
            )
        return [{"seed": int(random_seed) + 1 + i} for i in range(n_refiners)]
    if len(files) == 1:
        return [{"checkpoint": files[0]} for _ in range(n_refiners)]
    if len(files) != n_refiners:
        raise MagnetError(
            f"got {len(files)} refiner checkpoints, but these settings use {n_refiners} refiner(s) "
            f"(one per scale transition): give {n_refiners} files in scale order, or one shared file"
        )
    return [{"checkpoint": f} for f in files]


def build_artifacts(
    settings: Settings,
    *,
    backbone_checkpoint: Path | None,
    refiner_checkpoints: Sequence[Path],
    random_seed: int | None,
    out_dir: Path,
    target: str = "cpu",
    precision: str = "fp32",
    max_batch: int = 16,
    progress: Progress | None = None,
    opset: int = 17,
    parity_batch: int = 1,
    parity_fp64: bool = False,
    workspace_bytes: int | None = None,
) -> Artifacts:
    """Export (and on ``gpu`` build) every network of ``settings`` into ``out_dir``.

    Args:
        settings: the backbone name, class count, input size and refiner count come from here.
        backbone_checkpoint: authors'-layout checkpoint of the backbone; None for random weights.
        refiner_checkpoints: see :func:`refiner_sources`.
        random_seed: seed of random weights for the networks without a checkpoint (None: none allowed).
        out_dir: result folder; replaced if it holds earlier artifacts, refused if it holds other files.
        target: ``cpu`` (ONNX for onnxruntime) or ``gpu`` (also TensorRT engines).
        precision: ``fp32``, or ``fp16`` for engines (the ONNX files are always FP32).
        max_batch: largest batch of both networks (Triton ``max_batch_size``, engine profile max).
        progress: called with one line per step; default: log at INFO.
        parity_batch: patches per parity check (the backbones are slow on CPUs).
        parity_fp64: also measure PyTorch FP32 against FP64 (doubles the check time).

    Raises:
        MagnetError: bad arguments, unreadable checkpoints, unwritable ``out_dir``, missing TensorRT or
            GPU on ``gpu``, or an export whose parity bounds fail. Nothing is left at ``out_dir`` then.
    """
    from magnet_triton.io_spec import backbone_spec, refiner_spec, refiner_version

    say = progress or (lambda message: log.info("%s", message))
    if target not in TARGETS:
        raise MagnetError(f"target must be one of {TARGETS}, got {target!r}")
    if precision not in ("fp32", "fp16"):
        raise MagnetError(f"precision must be fp32 or fp16, got {precision!r}")
    if precision == "fp16" and target == "cpu":
        raise MagnetError("fp16 applies to TensorRT engines; use --target gpu, or fp32 for the CPU target")
    if backbone_checkpoint is None and random_seed is None:
        raise MagnetError("no backbone checkpoint: give one, or use random weights")
    refiners = refiner_sources(refiner_checkpoints, settings.n_refiners, random_seed)
    for path in [backbone_checkpoint, *(s.get("checkpoint") for s in refiners)]:
        if path is not None and not Path(path).is_file():
            raise MagnetError(f"checkpoint file not found: {path}")
    if target == "gpu":
        from magnet_triton.export.tensorrt_build import current_environment

        env = current_environment()  # fail now, not after minutes of export
        say(
            f"TensorRT {env.tensorrt_version} on {env.gpu_name} (compute capability {env.compute_capability})"
        )

    out_dir = Path(out_dir).absolute()
    tmp = make_staging_dir(out_dir, MANIFEST)
    try:
        parity: dict[str, ParityReport] = {}
        b_spec = backbone_spec(settings, max_batch)
        r_spec = refiner_spec(settings, max_batch)
        backbone_source = (
            {"checkpoint": backbone_checkpoint} if backbone_checkpoint else {"seed": random_seed}
        )
        backbone_rel = Path("onnx/backbone.onnx")
        parity["backbone"] = _export_checked(
            settings.backbone,
            settings,
            backbone_source,
            b_spec,
            tmp / backbone_rel,
            say,
            opset,
            parity_batch,
            parity_fp64,
        )
        refiner_rels: list[Path] = []
        done: dict[str, Path] = {}  # source key -> first ONNX exported from it (shared refiners)
        for i, source in enumerate(refiners):
            rel = Path(f"onnx/refiner_{refiner_version(i)}.onnx")
            key = json.dumps({k: str(v) for k, v in source.items()})
            if key in done:
                say(f"refiner {i + 1}/{len(refiners)}: same weights as {done[key].name}, copying")
                shutil.copyfile(tmp / done[key], tmp / rel)
            else:
                parity[f"refiner_{refiner_version(i)}"] = _export_checked(
                    "refinement", settings, source, r_spec, tmp / rel, say, opset, parity_batch, parity_fp64
                )
                done[key] = rel
            refiner_rels.append(rel)

        backbone_engine_rel, refiner_engine_rels = None, []
        if target == "gpu":
            engine_kwargs = {"precision": precision, "max_batch": max_batch}
            if workspace_bytes is not None:
                engine_kwargs["workspace_bytes"] = workspace_bytes
            _seed_timing_cache(out_dir, tmp)
            backbone_engine_rel = Path("engines/backbone.plan")
            _engine_checked(
                tmp, backbone_rel, backbone_engine_rel, b_spec, parity, "backbone", say, engine_kwargs
            )
            built: dict[Path, Path] = {}
            for i, onnx_rel in enumerate(refiner_rels):
                rel = Path(f"engines/refiner_{refiner_version(i)}.plan")
                source_rel = next((o for o, e in built.items() if _same_file(tmp / o, tmp / onnx_rel)), None)
                if source_rel is not None:
                    _copy_engine(tmp / built[source_rel], tmp / rel)
                else:
                    name = f"refiner_{refiner_version(i)}"
                    _engine_checked(tmp, onnx_rel, rel, r_spec, parity, name, say, engine_kwargs)
                    built[onnx_rel] = rel
                refiner_engine_rels.append(rel)

        provenance = _provenance(backbone_source, refiners)
        artifacts = Artifacts(
            out_dir=out_dir,
            settings=settings,
            target=target,
            precision=precision,
            max_batch=max_batch,
            backbone_onnx=out_dir / backbone_rel,
            refiner_onnx=[out_dir / r for r in refiner_rels],
            backbone_engine=out_dir / backbone_engine_rel if backbone_engine_rel else None,
            refiner_engines=[out_dir / r for r in refiner_engine_rels],
            parity=parity,
            provenance=provenance,
        )
        (tmp / MANIFEST).write_text(json.dumps(artifacts.to_dict(), indent=2) + "\n")
        move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"artifacts ready in {out_dir}")
    return artifacts


# ---------------------------------------------------------------------- steps
def _export_checked(
    name: str,
    settings: Settings,
    source: dict[str, Any],
    spec: Any,
    path: Path,
    say: Progress,
    opset: int,
    parity_batch: int,
    parity_fp64: bool,
) -> ParityReport:
    from magnet_triton.export.onnx_export import export_onnx
    from magnet_triton.export.parity import parity_report

    if "checkpoint" in source:
        what = f"checkpoint {Path(source['checkpoint']).name}"
    else:
        what = f"random weights, seed {source['seed']}"
    say(f"{path.stem}: loading {name} ({what})")
    model = network_with_weights(
        name, settings.num_classes, checkpoint=source.get("checkpoint"), random_seed=source.get("seed")
    )
    say(f"{path.stem}: exporting ONNX (opset {opset})")
    export_onnx(model, spec, path, opset=opset, metadata={"magnet_triton.network": name})
    say(f"{path.stem}: checking onnxruntime against PyTorch")
    report = parity_report(
        name, settings.num_classes, path, model, batch=parity_batch, fp64=parity_fp64, seed=0
    )
    say(report.table())
    if not report.passed:
        raise MagnetError(f"{path.name} differs from PyTorch: {'; '.join(report.failures())}")
    return report


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


def _provenance(backbone: dict[str, Any], refiners: list[dict[str, Any]]) -> dict[str, Any]:
    from magnet_triton import __version__
    from magnet_triton.export.engine_record import file_sha256

    def describe(source: dict[str, Any]) -> dict[str, Any]:
        if "checkpoint" in source:
            path = Path(source["checkpoint"])
            return {"weights": "checkpoint", "path": str(path), "sha256": file_sha256(path)}
        return {"weights": "random", "seed": source["seed"]}

    entries = {"backbone": describe(backbone)}
    entries.update({f"refiner_{i + 1}": describe(s) for i, s in enumerate(refiners)})
    return {
        "random_weights": any(e["weights"] == "random" for e in entries.values()),
        "networks": entries,
        "magnet_triton_version": __version__,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
