"""Where the pipeline's own time goes: its steps replayed with recorded network outputs.

The reference run records what the backbone and the refiners returned; a replay feeds the same outputs
back instantly, so :func:`~magnet_triton.pipeline.run_magnet`'s per-stage timings then measure only
the orchestration (resizes, patch cutting, uncertainty, ``roi_align``, paste, smoothing, top-k, replace,
finish). ``magnet_pipeline`` runs them on all the server's CPUs unless its ``torch_threads`` parameter
says otherwise, which the replay at every core reproduces; the replay at 1 thread shows what one core
costs (a server with several busy pipeline instances).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from magnet_triton.pipeline import Networks
from magnet_triton.settings import Settings


class RecordingNetworks:
    """Wraps :class:`~magnet_triton.pipeline.Networks` and keeps every output, in call order."""

    def __init__(self, inner: Networks) -> None:
        self.inner = inner
        self.outputs: list[torch.Tensor] = []

    def backbone(self, patches: torch.Tensor) -> torch.Tensor:
        out = self.inner.backbone(patches)
        self.outputs.append(out)
        return out

    def refiner(self, index: int, fine_and_coarse: torch.Tensor) -> torch.Tensor:
        out = self.inner.refiner(index, fine_and_coarse)
        self.outputs.append(out)
        return out


class ReplayNetworks:
    """Returns recorded outputs in order; the inputs are checked for shape only."""

    def __init__(self, outputs: Sequence[torch.Tensor]) -> None:
        self.outputs = list(outputs)
        self.calls = 0

    def _next(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.outputs[self.calls]
        if out.shape[0] != inputs.shape[0]:
            raise RuntimeError(
                f"replay out of step: call {self.calls} has {inputs.shape[0]} patches, recorded {out.shape[0]}"
            )
        self.calls += 1
        return out.clone()  # the pipeline writes into its maps in place

    def backbone(self, patches: torch.Tensor) -> torch.Tensor:
        return self._next(patches)

    def refiner(self, index: int, fine_and_coarse: torch.Tensor) -> torch.Tensor:
        return self._next(fine_and_coarse)


def replay_profile(
    pixels: np.ndarray,
    settings: Settings,
    outputs: Sequence[torch.Tensor],
    expected: np.ndarray,
    *,
    threads: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Orchestration seconds per stage at each torch thread count (network stages take ~0 here).

    ``threads`` defaults to 1 and every CPU this process may use (``magnet_pipeline``'s default).
    Raises RuntimeError if a replay does not reproduce ``expected`` (the recorded run's class map).
    """
    from magnet_triton.pipeline import run_magnet

    if threads is None:
        threads = sorted({1, len(os.sched_getaffinity(0))})
    before = torch.get_num_threads()
    profile: dict[str, Any] = {}
    try:
        for n in threads:
            torch.set_num_threads(n)
            start = time.perf_counter()
            result = run_magnet(pixels, settings, ReplayNetworks(outputs))
            total = time.perf_counter() - start
            if not np.array_equal(result.segmentation, expected):
                raise RuntimeError("the replayed pipeline did not reproduce the recorded class map")
            stages = {k: v for k, v in result.timings_s.items() if k not in ("backbone", "refiner")}
            profile[f"{n} thread{'s' if n > 1 else ''}"] = {"total_s": total, "stages_s": stages}
    finally:
        torch.set_num_threads(before)
    return profile
