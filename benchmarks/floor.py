"""The compute floor: how fast MagNet could be on this machine if only the networks' arithmetic counted.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (2 per multiply-add) on one
patch at the preset's input size, multiplied by the number of network calls a mode makes per image, and
divided by the FLOP rate this machine reaches on the backbone alone: a batch of patches timed in
process, in PyTorch and in onnxruntime (what the CPU target serves), keeping the faster.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from magnet_triton.ops.geometry import patch_grid
from magnet_triton.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkCalls:
    """Patches through each network for one image: the coarse pass counts as a backbone patch."""

    backbone: int
    refiner: int


def network_calls(settings: Settings) -> NetworkCalls:
    """How many patches the backbone and the refiner see for one image in ``settings.mode``."""
    if settings.mode == "downsample":
        return NetworkCalls(1, 0)
    if settings.mode == "patching":
        return NetworkCalls(1 + len(patch_grid(settings.scales[-1], settings.crop_size)), 0)
    refined = 0
    for size in settings.scales[1:]:
        n_all = len(patch_grid(size, settings.crop_size))
        refined += n_all if settings.mode == "magnet" else min(settings.n_patches, n_all)
    return NetworkCalls(1 + refined, refined)


def count_flops(module: torch.nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``module`` on ``example`` (matmuls and convolutions, 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(example)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class PatchFlops:
    """FLOPs of one patch through each network at the preset's input size."""

    backbone: int
    refiner: int

    def per_image(self, calls: NetworkCalls) -> int:
        return calls.backbone * self.backbone + calls.refiner * self.refiner


def patch_flops(settings: Settings, backbone: torch.nn.Module, refiner: torch.nn.Module) -> PatchFlops:
    width, height = settings.input_size
    c = settings.num_classes
    return PatchFlops(
        backbone=count_flops(backbone, torch.zeros(1, 3, height, width)),
        refiner=count_flops(refiner, torch.zeros(1, 2 * c, height, width)),
    )


@dataclass(frozen=True)
class FlopRate:
    """Seconds per patch and FLOP/s of the backbone on a batch, per runtime."""

    runtime: str
    batch: int
    seconds_per_patch: float
    flops_per_s: float


def _best_time(run: Any, repeats: int) -> float:
    run()  # warm-up: first calls allocate and pick kernels
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def backbone_rates(
    settings: Settings,
    backbone: torch.nn.Module,
    flops_per_patch: int,
    *,
    onnx_file: Path | None,
    batch: int = 4,
    repeats: int = 2,
) -> list[FlopRate]:
    """The backbone's FLOP rate on one patch and on a batch of ``batch`` random patches, best of ``repeats``.

    Both sizes are timed because the faster one differs by runtime: a full-resolution stem makes large
    batches memory-bound in PyTorch. PyTorch runs with its default threads (all cores); onnxruntime with
    the serving defaults (``intra_op_num_threads=0``: all cores).
    """
    width, height = settings.input_size
    patches = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    sizes = sorted({1, batch})
    runs: list[tuple[str, int, Any]] = []
    for size in sizes:
        chunk = patches[:size]

        def torch_run(chunk: torch.Tensor = chunk) -> None:
            with torch.inference_mode():
                backbone(chunk)

        runs.append(("pytorch", size, torch_run))
    if onnx_file is not None and onnx_file.is_file():
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for size in sizes:
            array = patches[:size].numpy()
            runs.append(("onnxruntime", size, lambda array=array: session.run(None, {name: array})))
    rates = []
    for runtime, size, run in runs:
        seconds = _best_time(run, repeats) / size
        rates.append(FlopRate(runtime, size, seconds, flops_per_patch / seconds))
        log.info(
            "%s backbone, batch %d: %.3f s per patch, %.1f GFLOP/s",
            runtime,
            size,
            seconds,
            flops_per_patch / seconds / 1e9,
        )
    return rates


@dataclass(frozen=True)
class Floor:
    """The compute floor of one image under ``settings``."""

    preset: str
    mode: str
    calls: NetworkCalls
    flops: PatchFlops
    image_flops: int
    rates: list[FlopRate]

    @property
    def best_rate(self) -> FlopRate:
        return max(self.rates, key=lambda r: r.flops_per_s)

    @property
    def seconds(self) -> float:
        """Image FLOPs over the best backbone FLOP rate."""
        return self.image_flops / self.best_rate.flops_per_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": self.seconds, "best_runtime": self.best_rate.runtime}


def compute_floor(settings: Settings, flops: PatchFlops, rates: list[FlopRate]) -> Floor:
    calls = network_calls(settings)
    return Floor(settings.name, settings.mode, calls, flops, flops.per_image(calls), rates)


def describe(floor: Floor) -> str:
    """One line: FLOPs per patch and image, the rate, the floor."""
    best = floor.best_rate
    per_image = (
        f"{floor.image_flops / 1e12:.2f} TFLOP"
        if floor.image_flops >= 1e12
        else f"{floor.image_flops / 1e9:.1f} GFLOP"
    )
    return (
        f"{floor.mode}: {floor.calls.backbone} backbone x {floor.flops.backbone / 1e9:.1f} GFLOP + "
        f"{floor.calls.refiner} refiner x {floor.flops.refiner / 1e9:.2f} GFLOP = "
        f"{per_image} per image; backbone rate {best.flops_per_s / 1e9:.0f} GFLOP/s "
        f"({best.runtime}, batch {best.batch}) -> floor {floor.seconds:.1f} s"
    )
