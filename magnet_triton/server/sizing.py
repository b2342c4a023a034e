"""Memory the server needs for a repository, sized from its preset and serving options.

Two pools matter. The Python backend's shared memory carries every tensor that crosses between the
server and a stub on the CPU path (images, patches, probabilities, class maps); Triton grows it on
demand, so its default stays. On a GPU, tensors that cross
by DLPack come from Triton's CUDA memory pool, whose default (64 MiB) is smaller than one batch of
Cityscapes refiner inputs (16 x 38 x 128 x 256 float32 = 80 MiB): a pool too small sends them through
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


def memory_settings(manifest: dict[str, Any]) -> MemorySettings:
    """The memory settings of a repository from its ``magnet_repository.json``.

    CPU target: the 64 MiB default shared memory, which Triton grows in 64 MiB steps as batches need
    (every stub maps its own region, so a large default multiplies across the instances). GPU target:
    the network tensors stay on the GPU, in a CUDA pool that holds every concurrent pipeline's call in
    flight twice over (inputs and outputs live at once), at least 256 MiB; shared memory still carries
    the images and class maps and keeps its default.
    """
    options = manifest.get("options", {})
    max_batch = int(options.get("max_batch", 8))
    pipelines = int(options.get("pipeline_instances", 2))
    pool = None
    if manifest.get("target") == "gpu":
        batch = network_batch_bytes(manifest["settings"], max_batch)
        pool = max(256 * MIB, _round_up_mib(2 * pipelines * batch))
    return MemorySettings(DEFAULT_PYTHON_SHM_BYTE_SIZE, pool)
