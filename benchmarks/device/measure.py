"""Serving measurements of one GPU repository: latency, throughput and GPU memory over real gRPC.

Used by the device run (:mod:`benchmarks.device.kit`). The image goes in encoded, as users send it, to
the ``magnet`` ensemble; the class map comes back.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


class GpuMemorySampler:
    """The peak of ``nvidia-smi``'s used memory on GPU 0 while running (a thread polling every 0.1 s)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @staticmethod
    def used_mib() -> int:
        if shutil.which("nvidia-smi") is None:
            return 0
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
        ).stdout
        return int(out.strip().splitlines()[0]) if out.strip() else 0

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mib = max(self.peak_mib, self.used_mib())

    def __enter__(self) -> GpuMemorySampler:
        self.peak_mib = self.used_mib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """p50 and p90 of latencies, in milliseconds."""
    values = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p90_ms": round(float(np.percentile(values, 90)), 1),
    }


def measure_repository(
    repository: Path, encoded: bytes, *, requests: int = 10, concurrent: int = 8, concurrency: int = 4
) -> dict[str, Any]:
    """Serve ``repository`` and time ``requests`` images at concurrency 1, then ``concurrent`` at ``concurrency``.

    Returns latencies, images/s, the GPU memory the requests added over the loaded server (MiB, peak
    while one request at a time runs), and the last class map (H x W uint8) for the comparisons.
    """
    from magnet_triton.client import MagnetClient
    from magnet_triton.export.repository import read_manifest
    from magnet_triton.server import TritonServer
    from magnet_triton.server.sizing import memory_settings

    sized = memory_settings(read_manifest(repository))
    log_path = repository.parent / f"{repository.name}.server.log"
    server = TritonServer(
        repository,
        log_path=log_path,
        extra_args=sized.tritonserver_args(),
        python_shm_default_byte_size=sized.python_shm_default_byte_size,
        startup_timeout_s=300,
    )
    with server, MagnetClient(server.grpc_url, timeout_s=600) as client:
        client.segment(encoded)  # warm-up: cuDNN autotuning, CUDA graphs, allocator pools
        loaded_mib = GpuMemorySampler.used_mib()
        with GpuMemorySampler() as sampler:
            latencies = [client.segment(encoded).latency_s for _ in range(requests)]
        start = time.perf_counter()
        results = client.segment_many([encoded] * concurrent, max_concurrency=concurrency)
        elapsed = time.perf_counter() - start
    return {
        **percentiles_ms(latencies),
        "requests": requests,
        f"images_per_s_at_concurrency_{concurrency}": round(concurrent / elapsed, 2),
        "gpu_memory_loaded_mib": loaded_mib,
        "gpu_memory_per_request_mib": max(0, sampler.peak_mib - loaded_mib),
        "segmentation": results[-1].segmentation,
    }
