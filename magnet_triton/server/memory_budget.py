"""Does a served repository fit the memory its operator declares (``serve --memory-limit-gb``)?

What a server needs is two parts:

- **its footprint once ready**, measured, not guessed: ``tritonserver``'s resident memory plus each
  stub's high-water mark (``VmHWM``). The networks warm up at their largest batch, so the high-water
  mark already holds the biggest network call (and, with onnxruntime's arena on, the arena it leaves);
- **each pipeline instance's peak per request**, which grows with the image: the pipeline holds
  full-resolution float32 maps of every class (the coarse prediction, the current scale's, the
  refined result), :data:`MAP_COPIES` of them at once, on top of a fixed part.

The repository's pixel limit bounds the second, so ``footprint + instances x peak(max_image_pixels)``
must fit the declared memory; otherwise ``serve`` stops and says the largest limit that would fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magnet_triton.errors import MagnetError
from magnet_triton.settings import settings_from_dict

GB = 10**9  # as ``--memory-limit-gb`` and the messages count
MIB = 1 << 20

#: C x H x W float32 maps alive at once in a pipeline request, and the request's fixed part (BLS
#: tensors of one network batch, torch's workspace). Fitted with a margin to ``benchmarks/memory.py``
#: (cityscapes-fast, 19 classes, 2026-12-02): the largest pipeline stub rose 1.85 GB above its idle
#: 0.24 GB for an 8 MP image (3.0 copies) and 0.71 GB for 2 MP (fixed part plus 4.6 copies).
MAP_COPIES = 3.5
REQUEST_FIXED_BYTES = 512 * MIB


def request_peak_bytes(num_classes: int, pixels: int) -> int:
    """Bytes one pipeline request adds to its stub for an image of ``pixels`` pixels."""
    return int(REQUEST_FIXED_BYTES + MAP_COPIES * num_classes * pixels * 4 + pixels * (3 + 1 + 1 + 4))


def largest_fitting_pixels(num_classes: int, per_request_bytes: int) -> int:
    """The most pixels an image may have for one request to fit in ``per_request_bytes``."""
    room = per_request_bytes - REQUEST_FIXED_BYTES
    return max(0, int(room / (MAP_COPIES * num_classes * 4 + 9)))


def _status_bytes(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measured_footprint_bytes(server_pid: int, stub_pids: list[int]) -> int:
    """``tritonserver``'s resident memory plus the high-water mark of each of its stubs."""
    return _status_bytes(server_pid, "VmRSS") + sum(_status_bytes(pid, "VmHWM") for pid in stub_pids)


@dataclass(frozen=True)
class MemoryPlan:
    """The memory a ready server needs at its limits.

    Attributes:
        footprint_bytes: measured once ready (see :func:`measured_footprint_bytes`).
        pipeline_instances: requests the pipeline runs at once.
        max_image_pixels: the repository's pixel limit.
        num_classes: classes of its preset (the maps' depth).
    """

    footprint_bytes: int
    pipeline_instances: int
    max_image_pixels: int
    num_classes: int

    @classmethod
    def of(cls, manifest: dict[str, Any], footprint_bytes: int) -> MemoryPlan:
        options = manifest.get("options", {})
        # The progressive pipeline's instance holds a request's maps like the pipeline's do.
        progressive = 1 if options.get("progressive") else 0
        return cls(
            footprint_bytes=footprint_bytes,
            pipeline_instances=int(options.get("pipeline_instances", 2)) + progressive,
            max_image_pixels=int(options.get("max_image_pixels", 16 * 1024 * 1024)),
            num_classes=settings_from_dict(manifest["settings"]).num_classes,
        )

    @property
    def request_bytes(self) -> int:
        return request_peak_bytes(self.num_classes, self.max_image_pixels)

    @property
    def total_bytes(self) -> int:
        return self.footprint_bytes + self.pipeline_instances * self.request_bytes

    def describe(self) -> str:
        return (
            f"{self.footprint_bytes / GB:.1f} GB ready + {self.pipeline_instances} pipeline instances x "
            f"{self.request_bytes / GB:.1f} GB at the {self.max_image_pixels / 1e6:.1f} MP limit = "
            f"{self.total_bytes / GB:.1f} GB"
        )

    def check(self, declared_bytes: int) -> None:
        """Raise :class:`MagnetError` when the plan does not fit ``declared_bytes``, saying what would."""
        if self.total_bytes <= declared_bytes:
            return
        room = (declared_bytes - self.footprint_bytes) // self.pipeline_instances
        pixels = largest_fitting_pixels(self.num_classes, room)
        fix = (
            f"export with --max-image-pixels {pixels} (or fewer --pipeline-instances)"
            if pixels > 0
            else "not even a small image fits beside the ready server; give it more memory or export "
            "fewer --pipeline-instances"
        )
        raise MagnetError(
            f"the repository needs {self.describe()}, over the declared {declared_bytes / GB:.1f} GB; {fix}"
        )
