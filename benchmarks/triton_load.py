"""A closed-loop load on the served pipeline with tritonclient, and the server's own time accounting.

perf_analyzer is the tool Triton users know (:mod:`benchmarks.perf_sweep` runs it); this module is the
small, dependency-free twin the side-by-side table needs: it returns the class map (to check agreement)
and reads Triton's statistics before and after, so the time the networks spent executing can be
compared with the end-to-end latency.

Network time comes from ``batch_stats`` (one entry per execution), not from ``inference_stats``: a
batch that merges requests of several pipelines records its duration once per request there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from magnet_triton import io_spec

#: Override name -> (input name, Triton dtype, numpy dtype).
_OVERRIDE_INPUTS = {
    "mode": (io_spec.MODE, "BYTES", object),
    "n_points": (io_spec.N_POINTS, "FP32", np.float32),
    "n_patches": (io_spec.N_PATCHES, "INT32", np.int32),
    "patch_order": (io_spec.PATCH_ORDER, "BYTES", object),
}


def pipeline_inputs(image: np.ndarray, overrides: Mapping[str, Any]) -> list[Any]:
    """gRPC inputs of ``magnet_pipeline``: the raw H x W x 3 uint8 image and the optional overrides."""
    import tritonclient.grpc as grpcclient

    tensors = []
    image_input = grpcclient.InferInput(io_spec.IMAGE, list(image.shape), "UINT8")
    image_input.set_data_from_numpy(np.ascontiguousarray(image))
    tensors.append(image_input)
    for key, value in overrides.items():
        name, dtype, np_dtype = _OVERRIDE_INPUTS[key]
        array = np.array([str(value).encode() if np_dtype is object else value], dtype=np_dtype)
        tensor = grpcclient.InferInput(name, [1], dtype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def segment(client: Any, image: np.ndarray, overrides: Mapping[str, Any]) -> np.ndarray:
    """The H x W uint8 class map the server returns for ``image``."""
    result = client.infer(io_spec.PIPELINE_MODEL, pipeline_inputs(image, overrides))
    return result.as_numpy(io_spec.SEGMENTATION)


# ---------------------------------------------------------------------- server statistics
def execution_seconds(client: Any) -> dict[str, float]:
    """Seconds each model has spent executing (input + infer + output, per execution), all versions summed."""
    stats = client.get_inference_statistics(as_json=True)
    totals: dict[str, float] = {}
    for model in stats.get("model_stats", []):
        ns = 0
        for batch in model.get("batch_stats", []):
            for part in ("compute_input", "compute_infer", "compute_output"):
                ns += int(batch.get(part, {}).get("ns", 0))
        totals[model["name"]] = totals.get(model["name"], 0.0) + ns / 1e9
    return totals


def _delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


# ---------------------------------------------------------------------- closed loop
@dataclass
class LoadResult:
    """One closed-loop measurement.

    Attributes:
        label: what was measured (mode and preset).
        concurrency: requests kept in flight.
        latencies_s: end-to-end latency of each request, in completion order.
        wall_s: from the first send to the last reply.
        busy_s: seconds each model executed during the measurement (server statistics).
        segmentation: the class map of the first reply.
    """

    label: str
    concurrency: int
    latencies_s: list[float]
    wall_s: float
    busy_s: dict[str, float] = field(default_factory=dict)
    segmentation: np.ndarray | None = None

    @property
    def throughput(self) -> float:
        """Images per second."""
        return len(self.latencies_s) / self.wall_s

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q))

    @property
    def network_s(self) -> float:
        """Seconds the backbone and refiner models executed."""
        return sum(s for name, s in self.busy_s.items() if io_spec.is_network_model(name))

    @property
    def outside_networks(self) -> float:
        """Fraction of the end-to-end time not spent executing the networks.

        Meaningful at concurrency 1, where request latencies do not overlap: sum of latencies minus
        network execution time, over the sum of latencies.
        """
        total = sum(self.latencies_s)
        return 1.0 - self.network_s / total if total > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "concurrency": self.concurrency,
            "requests": len(self.latencies_s),
            "wall_s": self.wall_s,
            "throughput_per_s": self.throughput,
            "latency_p50_s": self.percentile(50),
            "latency_p95_s": self.percentile(95),
            "latency_p99_s": self.percentile(99),
            "latency_mean_s": float(np.mean(self.latencies_s)),
            "busy_s": self.busy_s,
            "outside_networks": self.outside_networks if self.concurrency == 1 else None,
        }


def closed_loop(
    url: str,
    image: np.ndarray,
    overrides: Mapping[str, Any],
    *,
    concurrency: int,
    requests: int,
    label: str,
    timeout_s: float = 3600.0,
) -> LoadResult:
    """Keep ``concurrency`` requests in flight until ``requests`` have completed.

    Each worker thread has its own gRPC client, as independent callers would. Errors propagate.
    """
    import tritonclient.grpc as grpcclient

    if concurrency < 1 or requests < concurrency:
        raise ValueError(f"need 1 <= concurrency <= requests, got {concurrency} and {requests}")
    inputs = pipeline_inputs(image, overrides)
    lock = threading.Lock()
    latencies: list[float] = []
    first: list[np.ndarray] = []
    errors: list[BaseException] = []
    remaining = [requests]

    def worker() -> None:
        with grpcclient.InferenceServerClient(url) as client:
            while True:
                with lock:
                    if remaining[0] == 0 or errors:
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                try:
                    reply = client.infer(io_spec.PIPELINE_MODEL, inputs, client_timeout=timeout_s)
                except BaseException as e:  # re-raised in the caller's thread
                    with lock:
                        errors.append(e)
                    return
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if not first:
                        first.append(reply.as_numpy(io_spec.SEGMENTATION))

    with grpcclient.InferenceServerClient(url) as stats_client:
        before = execution_seconds(stats_client)
        start = time.perf_counter()
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        after = execution_seconds(stats_client)
    if errors:
        raise errors[0]
    return LoadResult(label, concurrency, latencies, wall, _delta(after, before), first[0] if first else None)
