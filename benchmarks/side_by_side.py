"""Side by side, in one run, on one image with one set of weights: the eager baseline, the reference
pipeline, the Triton CPU target at several concurrencies, its other modes, and the compute floor.

Usage (against a running server, or ``--start-server`` to serve the repository for the run)::

    python -m benchmarks.side_by_side --repository REPO (--url HOST:PORT | --start-server) --out DIR \
        [--preset P] [--concurrency 1,2,4] [--modes downsample,patching] [--exact-ties]

``--preset`` may differ from the served preset in what a request can override (mode, n_points,
n_patches, patch_order): ``cityscapes`` is measured on a ``cityscapes-fast`` repository that way.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.common import (
    BenchImage,
    load_test_image,
    machine_record,
    networks_from_manifest,
    request_overrides,
    served_settings,
    write_json,
)
from magnet_triton.errors import MagnetError
from magnet_triton.settings import PRESETS, Settings, get_preset

if TYPE_CHECKING:  # floor and triton_load import torch and tritonclient: keep --help light
    from benchmarks.floor import FlopRate, PatchFlops
    from benchmarks.triton_load import LoadResult

log = logging.getLogger(__name__)
NETWORK_STAGES = ("backbone", "refiner")
EAGER = "eager, authors' structure (PyTorch)"
TRITON = "Triton CPU (magnet_pipeline)"


@dataclass
class Plan:
    """What to measure.

    Attributes:
        concurrencies: Triton load levels for the preset's own mode.
        requests: requests per level is ``max(requests, concurrency)``.
        modes: other modes measured on the server at concurrency 1 (one request each).
        exact_ties: also run the eager baseline with the pipeline's lowest-index top-k.
        floor_batch, floor_repeats: the in-process backbone timing behind the FLOP rate.
        gpu: also run the GPU comparison where a CUDA GPU exists.
    """

    concurrencies: Sequence[int] = (1, 2, 4)
    requests: int = 2
    modes: Sequence[str] = ("downsample", "patching")
    exact_ties: bool = False
    floor_batch: int = 4
    floor_repeats: int = 2
    gpu: bool = True


@dataclass
class Row:
    """One line of the table: a system measured on the image. Times in seconds."""

    system: str
    mode: str
    concurrency: int
    requests: int
    latency_p50_s: float
    latency_p95_s: float
    throughput_per_s: float
    outside_networks: float | None = None
    stages_s: dict[str, float] = field(default_factory=dict)

    @property
    def seconds_per_image(self) -> float:
        return 1.0 / self.throughput_per_s


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def _in_process_row(system: str, settings: Settings, seconds: float, stages: dict[str, float]) -> Row:
    total = sum(stages.values())
    outside = 1.0 - sum(stages.get(s, 0.0) for s in NETWORK_STAGES) / total
    return Row(system, settings.mode, 1, 1, seconds, seconds, 1.0 / seconds, outside, stages)


def _load_row(mode: str, load: LoadResult) -> Row:
    summary = load.summary()
    return Row(
        TRITON,
        mode,
        load.concurrency,
        summary["requests"],
        summary["latency_p50_s"],
        summary["latency_p95_s"],
        summary["throughput_per_s"],
        summary["outside_networks"],
        {k: v for k, v in load.busy_s.items() if v > 0},
    )


def measure_rates(repository: Path, settings: Settings, plan: Plan) -> tuple[PatchFlops, list[FlopRate]]:
    """FLOPs per patch and the backbone's FLOP rate in PyTorch and onnxruntime (the floor's inputs)."""
    from benchmarks.floor import backbone_rates, patch_flops

    log.info("floor: FLOPs per patch and the backbone's FLOP rate (batch %d)", plan.floor_batch)
    networks = networks_from_manifest(repository, settings)
    flops = patch_flops(settings, networks.backbone_module, networks.refiner_modules[0])
    rates = backbone_rates(
        settings,
        networks.backbone_module,
        flops.backbone,
        onnx_file=repository / "magnet_backbone" / "1" / "model.onnx",
        batch=plan.floor_batch,
        repeats=plan.floor_repeats,
    )
    return flops, rates


def run_side_by_side(
    repository: Path,
    url: str,
    settings: Settings,
    image: BenchImage,
    plan: Plan,
    *,
    flops_and_rates: tuple[PatchFlops, list[FlopRate]] | None = None,
) -> dict[str, Any]:
    """Measure everything in ``plan`` and return the results as a JSON-able dict.

    ``flops_and_rates`` reuses :func:`measure_rates` from an earlier call on the same networks.
    """
    from benchmarks.eager_reference import EagerMagNet
    from benchmarks.floor import compute_floor, describe
    from benchmarks.gpu_compare import NOT_MEASURED, run_gpu_compare
    from benchmarks.profile_steps import RecordingNetworks, replay_profile
    from benchmarks.triton_load import closed_loop
    from magnet_triton.pipeline import run_magnet

    served = served_settings(repository)
    overrides = request_overrides(served, settings)
    networks = networks_from_manifest(repository, settings)
    pixels = image.pixels
    rows: list[Row] = []
    agreement: dict[str, float] = {}

    flops, rates = flops_and_rates or measure_rates(repository, settings, plan)
    modes = [settings.mode, *(m for m in plan.modes if m != settings.mode)]
    floors = {m: compute_floor(settings.with_overrides(mode=m), flops, rates) for m in modes}

    log.info("in-process reference pipeline (run_magnet, batched patches)")
    recording = RecordingNetworks(networks)
    start = time.perf_counter()
    reference = run_magnet(pixels, settings, recording)
    elapsed = time.perf_counter() - start
    rows.append(_in_process_row("run_magnet (PyTorch, batched)", settings, elapsed, reference.timings_s))
    log.info("orchestration replayed with the recorded network outputs")
    replay = replay_profile(pixels, settings, recording.outputs, reference.segmentation)
    del recording  # the recorded outputs of a full preset take hundreds of MB

    variants = [("torch-topk", EAGER)] + (
        [("lowest-index", "eager, lowest-index top-k")] if plan.exact_ties else []
    )
    for tie_break, system in variants:
        log.info("eager baseline (%s)", tie_break)
        eager = EagerMagNet(networks.backbone_module, networks.refiner_modules, tie_break=tie_break)
        start = time.perf_counter()
        result = eager(pixels, settings)
        rows.append(_in_process_row(system, settings, time.perf_counter() - start, result.timings_s))
        agreement[f"{system} vs run_magnet"] = _agreement(result.segmentation, reference.segmentation)

    for concurrency in plan.concurrencies:
        requests = max(plan.requests, concurrency)
        log.info("Triton CPU target: concurrency %d, %d requests", concurrency, requests)
        load = closed_loop(
            url, pixels, overrides, concurrency=concurrency, requests=requests, label=settings.mode
        )
        rows.append(_load_row(settings.mode, load))
        if "Triton vs run_magnet" not in agreement and load.segmentation is not None:
            agreement["Triton vs run_magnet"] = _agreement(load.segmentation, reference.segmentation)

    for mode in modes[1:]:
        log.info("Triton CPU target: mode %s", mode)
        mode_overrides = request_overrides(served, settings.with_overrides(mode=mode))
        load = closed_loop(url, pixels, mode_overrides, concurrency=1, requests=1, label=mode)
        rows.append(_load_row(mode, load))

    gpu = run_gpu_compare(repository, settings, pixels) if plan.gpu else None
    return {
        "preset": settings.name,
        "mode": settings.mode,
        "served_preset": served.name,
        "overrides": overrides,
        "image": {"name": image.name, "width": int(pixels.shape[1]), "height": int(pixels.shape[0])},
        "plan": asdict(plan),
        "rows": [{**asdict(r), "seconds_per_image": r.seconds_per_image} for r in rows],
        "agreement": agreement,
        "floors": {m: f.to_dict() for m, f in floors.items()},
        "floor_lines": [describe(f) for f in floors.values()],
        "replay": replay,
        "gpu": gpu if gpu is not None else NOT_MEASURED,
    }


# ---------------------------------------------------------------------- command line
def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.side_by_side",
        description="Eager baseline, reference pipeline, Triton CPU target and compute floor on one image.",
    )
    parser.add_argument("--repository", required=True, type=Path, help="exported model repository")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="gRPC host:port of a server already serving --repository")
    where.add_argument("--start-server", action="store_true", help="serve --repository for this run")
    parser.add_argument("--out", required=True, type=Path, help="folder for side_by_side.{json,md}")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="default: the served preset")
    parser.add_argument(
        "--image", help="path, 'cityscapes', 'deepglobe' or 'synthetic' (default: shared Cityscapes)"
    )
    parser.add_argument("--concurrency", type=_int_list, default=[1, 2, 4], help="comma-separated levels")
    parser.add_argument(
        "--requests", type=int, default=2, help="requests per level (at least the concurrency)"
    )
    parser.add_argument(
        "--modes", default="downsample,patching", help="other modes at concurrency 1 ('' for none)"
    )
    parser.add_argument(
        "--exact-ties", action="store_true", help="also run the eager baseline with lowest-index top-k"
    )
    parser.add_argument("--floor-batch", type=int, default=4, help="patches per timed backbone call")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.report import side_by_side_markdown

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        settings = get_preset(args.preset) if args.preset else served_settings(args.repository)
        image = load_test_image(args.image)
        plan = Plan(
            concurrencies=args.concurrency,
            requests=args.requests,
            modes=[m for m in args.modes.split(",") if m],
            exact_ties=args.exact_ties,
            floor_batch=args.floor_batch,
        )
        record = machine_record(["python", "-m", "benchmarks.side_by_side", *(argv or sys.argv[1:])])
        if args.start_server:
            from magnet_triton.server import TritonServer

            with TritonServer(args.repository, log_path=args.out / "server.log") as server:
                results = run_side_by_side(args.repository, server.grpc_url, settings, image, plan)
        else:
            results = run_side_by_side(args.repository, args.url, settings, image, plan)
    except MagnetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    results["record"] = record
    write_json(args.out / "side_by_side.json", results)
    text = "\n".join(side_by_side_markdown(results, record))
    (args.out / "side_by_side.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
