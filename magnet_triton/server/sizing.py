"""Memory the server needs for a repository, sized from its preset and serving options.

Two pools matter. The Python backend's shared memory carries every tensor that crosses between the
server and a stub on the CPU (images and class maps always; patches and probabilities on the CPU
target); Triton grows it on demand, so it starts at what a request at the preset's size needs. On a GPU, tensors that cross
by DLPack come from Triton's CUDA memory pool, whose default (64 MiB) is smaller than one batch of
Cityscapes refiner inputs (16 x 38 x 128 x 256 float32 = 76 MiB): a pool too small sends them through
the host instead. So ``magnet-triton serve`` sizes both from the manifest of the repository.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from magnet_triton.server.process import DEFAULT_PYTHON_SHM_BYTE_SIZE
from magnet_triton.settings import settings_from_dict

MIB = 1 << 20


@dataclass(frozen=True)
class MemorySettings:
    """What to give ``tritonserver`` for one repository.

    Attributes:
        python_shm_default_byte_size: the Python backend's initial shared memory per stub.
        cuda_memory_pool_byte_size: Triton's CUDA pool on each GPU; None on the CPU target.
    """

    python_shm_default_byte_size: int
    cuda_memory_pool_byte_size: int | None

    def tritonserver_args(self, gpus: int = 1) -> list[str]:
        """``--cuda-memory-pool-byte-size=<gpu>:<bytes>`` for each GPU (none on the CPU target)."""
        if self.cuda_memory_pool_byte_size is None:
            return []
        return [
            f"--cuda-memory-pool-byte-size={gpu}:{self.cuda_memory_pool_byte_size}" for gpu in range(gpus)
        ]


def _round_up_mib(value: float, multiple: int = 64) -> int:
    return int(math.ceil(value / (multiple * MIB)) * multiple * MIB)


def network_batch_bytes(settings_dict: dict[str, Any], max_batch: int) -> int:
    """Bytes of the largest network call: the refiner's 2C-channel input plus its C-channel output."""
    settings = settings_from_dict(settings_dict)
    iw, ih = settings.input_size
    c = settings.num_classes
    return max_batch * (max(3, 2 * c) + c) * ih * iw * 4


def image_bytes(settings_dict: dict[str, Any]) -> int:
    """Bytes of one request at the preset's final scale: the H x W x 3 image in, and the class maps
    (2 x uint8) and confidence (float32) out."""
    width, height = settings_from_dict(settings_dict).scales[-1]
    return width * height * (3 + 1 + 1 + 4)


def memory_settings(manifest: dict[str, Any]) -> MemorySettings:
    """The memory settings of a repository from its ``magnet_repository.json``.

    Shared memory (per stub, grown by Triton in 64 MiB steps when a request needs more): two requests'
    images and maps at the preset's final scale, at least the 64 MiB default (Cityscapes: 64 MiB,
    DeepGlobe: 128 MiB). CUDA pool (GPU target): the network tensors stay on the GPU, so it holds every
    concurrent pipeline's largest network call twice over (inputs and outputs live at once), at least
    256 MiB.
    """
    options = manifest.get("options", {})
    max_batch = int(options.get("max_batch", 8))
    pipelines = int(options.get("pipeline_instances", 2))
    shm = max(DEFAULT_PYTHON_SHM_BYTE_SIZE, _round_up_mib(2 * image_bytes(manifest["settings"])))
    pool = None
    if manifest.get("target") == "gpu":
        batch = network_batch_bytes(manifest["settings"], max_batch)
        pool = max(256 * MIB, _round_up_mib(2 * pipelines * batch))
    return MemorySettings(shm, pool)
