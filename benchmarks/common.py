"""What every benchmark shares: the machine record, the test image, the repository's settings and weights.

Pure helpers: no server, no timing. A table is only worth something with the date, the machine, the
command and the commit next to it, so :func:`machine_record` collects them in one place.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from magnet_triton.errors import MagnetError
from magnet_triton.request_options import option_names
from magnet_triton.settings import Settings, settings_from_dict

if TYPE_CHECKING:
    from magnet_triton.local import TorchNetworks

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The shared real images live beside the checkout, never inside it (licences, size).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SHARED_IMAGES = {
    "cityscapes": SHARED_DATA / "cityscapes_frankfurt_000001_003056.png",
    "deepglobe": SHARED_DATA / "deepglobe_639004_sat.jpg",
}
#: The settings a request may change; everything else must match the served repository.
OVERRIDABLE = option_names()


# ---------------------------------------------------------------------- the record
def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=REPO_ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    # Uncommitted edits or new files change what was measured: say so instead of pretending it is the
    # commit (outputs under runs/ are ignored by git, so they do not count).
    return f"{out}+dirty" if dirty else out


def machine_record(command: Sequence[str] | None = None) -> dict[str, Any]:
    """Date, CPU model and core count, GPU (if any), commit and the command line, for a results table."""
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "commit": _commit(),
        "command": shlex.join(command if command is not None else sys.argv),
        # Other work on the machine slows every system, and not equally: keep the load next to the numbers.
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def record_lines(record: dict[str, Any]) -> list[str]:
    """The record as Markdown lines, to head a table."""
    return [
        f"- date: {record['date']}",
        f"- machine: {record['cpu']}, {record['cores']} cores, GPU: {record['gpu']}",
        f"- commit: `{record['commit']}`",
        f"- command: `{record['command']}`",
        f"- load average (1 min) at the start: {record.get('load_average_1min', 'unknown')}",
    ]


# ---------------------------------------------------------------------- the image
@dataclass(frozen=True)
class BenchImage:
    """The image every system segments: decoded pixels and the encoded file as it would be sent.

    Attributes:
        pixels: H x W x 3 uint8 RGB.
        encoded: the PNG/JPEG file bytes (the shared file itself, or a PNG made here).
        name: where it came from, for the record.
    """

    pixels: np.ndarray
    encoded: bytes
    name: str


def png_bytes(pixels: np.ndarray) -> bytes:
    """H x W x 3 uint8 RGB -> PNG file bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def load_test_image(image: str | None, *, fallback_size: tuple[int, int] = (2048, 1024)) -> BenchImage:
    """The named image: a path, ``cityscapes``/``deepglobe`` (the shared files) or ``synthetic``.

    ``None`` means the shared Cityscapes image when ``../shared`` is there, else the synthetic street
    scene at ``fallback_size`` (W, H): a fresh clone has no shared folder, and the speed of MagNet does
    not depend on the pixels much (the patch counts are fixed by the preset).
    """
    from magnet_triton.imageio import decode_image
    from magnet_triton.sample import street_scene

    if image is None:
        image = "cityscapes" if SHARED_IMAGES["cityscapes"].is_file() else "synthetic"
    if image == "synthetic":
        pixels = street_scene(*fallback_size)
        return BenchImage(
            pixels, png_bytes(pixels), f"synthetic street scene {fallback_size[0]}x{fallback_size[1]}"
        )
    path = SHARED_IMAGES.get(image, Path(image))
    if not path.is_file():
        raise MagnetError(f"image {path} not found (the shared images live in {SHARED_DATA})")
    data = path.read_bytes()
    pixels = decode_image(data, source=str(path))
    return BenchImage(pixels, data, path.name)


# ---------------------------------------------------------------------- the repository
def repository_manifest(repository: Path) -> dict[str, Any]:
    """``magnet_repository.json`` of an exported repository."""
    from magnet_triton.export.repository import read_manifest

    return read_manifest(Path(repository))


def served_settings(repository: Path) -> Settings:
    """The settings the repository's pipeline serves."""
    return settings_from_dict(repository_manifest(repository)["settings"])


def request_overrides(served: Settings, wanted: Settings) -> dict[str, Any]:
    """Per-request overrides that turn the served settings into ``wanted``.

    Raises:
        MagnetError: ``wanted`` differs in something a request cannot change (scales, networks, ...).
    """
    fixed = {k: v for k, v in served.to_dict().items() if k not in (*OVERRIDABLE, "name", "fast_n_patches")}
    want = wanted.to_dict()
    differs = sorted(k for k, v in fixed.items() if want[k] != v)
    if differs:
        raise MagnetError(
            f"preset {wanted.name!r} differs from the served {served.name!r} in {differs}: "
            "export a repository for it"
        )
    return {k: want[k] for k in OVERRIDABLE if want[k] != getattr(served, k)}


def networks_from_manifest(repository: Path, settings: Settings) -> TorchNetworks:
    """The repository's networks as PyTorch modules (same checkpoints or seeds as its ONNX files).

    The manifest records each network's source (checkpoint path or random seed), so the in-process
    systems run exactly the weights the server runs.
    """
    from magnet_triton.local import torch_networks
    from magnet_triton.networks.weights import weight_set_from_record

    sources = repository_manifest(repository)["provenance"]["networks"]
    return torch_networks(settings, weight_set_from_record(sources, settings.n_refiners), max_batch=8)


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON; anything JSON does not know (paths, numpy scalars) as its ``str``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table; floats get 3 significant digits, None an em dash."""

    def cell(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines
