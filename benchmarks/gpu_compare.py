"""The GPU side by side: the eager baseline against the GPU pipeline, on the same GPU.

The GPU pipeline is :func:`~magnet_triton.pipeline.run_magnet` with PyTorch networks on batched patches,
FP16 where it keeps the class map (checked here against FP32 on the image itself), and the CUDA kernels
of :func:`~magnet_triton.ops.steps.steps_for_device` for the refinement steps. The baseline is
:class:`~benchmarks.eager_reference.EagerMagNet` in FP32 on the same device. Where there is no CUDA
GPU, :func:`run_gpu_compare` returns None and the caller reports "no GPU: not measured".

``device="cpu"`` runs the same code on the CPU, so the smoke test can reach every line of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magnet_triton.settings import Settings

log = logging.getLogger(__name__)
NOT_MEASURED = "no GPU: not measured"
#: FP16 is used when its final class map agrees with FP32 on at least this fraction of pixels.
FP16_MIN_AGREEMENT = 0.999


class HalfNetworks:
    """The pipeline's :class:`~magnet_triton.pipeline.Networks` with FP16 weights and FP32 probabilities.

    The softmax runs in FP32: FP16 logits can saturate it, and the maps downstream stay FP32.
    """

    def __init__(self, backbone: torch.nn.Module, refiners: list[torch.nn.Module], *, max_batch: int) -> None:
        self.backbone_module = backbone.half().eval()
        self.refiner_modules = [r.half().eval() for r in refiners]
        self.max_batch = max_batch

    @torch.inference_mode()
    def _run(self, module: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        chunks = [torch.softmax(module(c.half()).float(), dim=1) for c in inputs.split(self.max_batch)]
        return torch.cat(chunks)

    def backbone(self, patches: torch.Tensor) -> torch.Tensor:
        return self._run(self.backbone_module, patches)

    def refiner(self, index: int, fine_and_coarse: torch.Tensor) -> torch.Tensor:
        return self._run(self.refiner_modules[index], fine_and_coarse)


def _timed(run: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` runs after one warm-up (cuDNN picks kernels on the first call)."""
    result = run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def run_gpu_compare(
    repository: Path,
    settings: Settings,
    pixels: np.ndarray,
    *,
    device: str = "cuda",
    repeats: int = 3,
    max_batch: int = 16,
    allow_fp16: bool = True,
) -> dict[str, Any] | None:
    """Time eager FP32 (one patch at a time) against the GPU pipeline; None without a CUDA GPU.

    Returns seconds per image of each, the precision the pipeline used, the class-map agreement of the
    pipeline with the eager baseline and of FP16 with FP32, and the steps implementation.
    """
    from benchmarks.common import networks_from_manifest
    from benchmarks.eager_reference import EagerMagNet
    from magnet_triton.local import TorchNetworks
    from magnet_triton.ops.steps import steps_for_device
    from magnet_triton.pipeline import run_magnet

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return None
    cpu_networks = networks_from_manifest(repository, settings)
    fp32 = TorchNetworks(
        cpu_networks.backbone_module, cpu_networks.refiner_modules, device=dev, max_batch=max_batch
    )
    steps = steps_for_device(dev)

    eager = EagerMagNet(fp32.backbone_module, fp32.refiner_modules, device=dev)
    eager_s, eager_result = _timed(lambda: eager(pixels, settings), dev, repeats)
    fp32_s, fp32_result = _timed(
        lambda: run_magnet(pixels, settings, fp32, device=dev, steps=steps), dev, repeats
    )

    precision, pipeline_s, pipeline_result, fp16_agreement = "fp32", fp32_s, fp32_result, None
    if allow_fp16:
        import copy

        half = HalfNetworks(
            copy.deepcopy(fp32.backbone_module),
            [copy.deepcopy(r) for r in fp32.refiner_modules],
            max_batch=max_batch,
        )
        fp16_s, fp16_result = _timed(
            lambda: run_magnet(pixels, settings, half, device=dev, steps=steps), dev, repeats
        )
        fp16_agreement = float((fp16_result.segmentation == fp32_result.segmentation).mean())
        if fp16_agreement >= FP16_MIN_AGREEMENT:
            precision, pipeline_s, pipeline_result = "fp16", fp16_s, fp16_result
        else:
            log.warning(
                "FP16 keeps only %.4f%% of the FP32 class map: the pipeline stays FP32", 100 * fp16_agreement
            )
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "preset": settings.name,
        "mode": settings.mode,
        "repeats": repeats,
        "eager_fp32_s": eager_s,
        "pipeline_fp32_s": fp32_s,
        "pipeline_s": pipeline_s,
        "pipeline_precision": precision,
        "steps": getattr(steps, "name", type(steps).__name__),
        "speedup_vs_eager": eager_s / pipeline_s,
        "fp16_vs_fp32_agreement": fp16_agreement,
        "pipeline_vs_eager_agreement": float(
            (pipeline_result.segmentation == eager_result.segmentation).mean()
        ),
        "pipeline_stages_s": pipeline_result.timings_s,
    }
