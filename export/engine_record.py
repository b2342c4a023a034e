"""The JSON record written beside each TensorRT engine, and the check that reads it back.

A serialized engine only runs on the TensorRT version and the GPU model it was built for, and nothing
inside the ``.plan`` file says so in a readable way. Each build writes ``<engine>.json`` (TensorRT
version, GPU name and compute capability, precision, batch profile, the source ONNX hash, parity
figures, build time); loading reads it first and refuses a mismatched engine with a message that names
both sides. Nothing here needs TensorRT or a GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magnet_triton.errors import MagnetError

DEFAULT_WORKSPACE_BYTES = 4 << 30


@dataclass(frozen=True)
class BuildEnvironment:
    """What an engine is tied to: the TensorRT version and the GPU model."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "9.0"


@dataclass
class EngineRecord:
    """The JSON written next to an engine (``<engine>.json``)."""

    engine: str
    model: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: dict[str, dict[str, list[int]]]
    onnx_path: str
    onnx_sha256: str
    build_time_s: float
    built_at: str
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    fp32_layers: list[str] = field(default_factory=list)
    pinned_layers: list[str] = field(default_factory=list)
    timing_cache: str | None = None
    timing_cache_loaded: bool = False
    parity: dict[str, Any] | None = None

    @property
    def environment(self) -> BuildEnvironment:
        return BuildEnvironment(self.tensorrt_version, self.gpu_name, self.compute_capability)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data and _required(f))
        if missing:
            raise MagnetError(f"engine record lacks {missing}; rebuild the engine")
        return cls(**{k: v for k, v in data.items() if k in names})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def record_path(engine_path: str | os.PathLike[str]) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def write_record(record: EngineRecord, engine_path: str | os.PathLike[str]) -> Path:
    path = record_path(engine_path)
    atomic_write(path, (json.dumps(record.to_dict(), indent=2) + "\n").encode())
    return path


def read_record(engine_path: str | os.PathLike[str]) -> EngineRecord:
    path = record_path(engine_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MagnetError(
            f"{engine_path} has no build record {path.name}: its TensorRT version and GPU are unknown; "
            "rebuild it with this package"
        ) from None
    except (OSError, ValueError) as e:
        raise MagnetError(f"cannot read engine record {path}: {e}") from e
    return EngineRecord.from_dict(data)


def check_compatibility(record: EngineRecord, current: BuildEnvironment, engine_path: str = "engine") -> None:
    """Raise MagnetError unless ``record`` was built with ``current``'s TensorRT version and GPU."""
    built = record.environment
    mismatch = []
    if built.tensorrt_version != current.tensorrt_version:
        mismatch.append("TensorRT version")
    if built.compute_capability != current.compute_capability:
        mismatch.append("compute capability")
    if built.gpu_name != current.gpu_name:
        mismatch.append("GPU")
    if mismatch:
        raise MagnetError(
            f"{engine_path} was built with TensorRT {built.tensorrt_version} for {built.gpu_name} "
            f"(compute capability {built.compute_capability}), but this machine has TensorRT "
            f"{current.tensorrt_version} and {current.gpu_name} (compute capability "
            f"{current.compute_capability}); {', '.join(mismatch)} differ. Rebuild the engine here."
        )


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary sibling, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
