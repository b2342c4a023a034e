"""``magnet-triton export``: the command line of :func:`~magnet_triton.export.build.export_repository`.

The flags map one to one onto its arguments and :class:`~magnet_triton.export.repository.RepositoryOptions`;
a folder named ``--out`` is always a whole repository, never a half-written one.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from magnet_triton.errors import MagnetError
from magnet_triton.runtimes import RUNTIMES, TARGETS, engine_help

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from magnet_triton.cli_args import add_checkpoint_arguments, add_settings_arguments

    parser = subparsers.add_parser(
        "export",
        help="export checkpoints to a Triton model repository (ONNX, or TensorRT on --target gpu)",
        description="Export the backbone and refiners of a preset to ONNX (and TensorRT engines for the GPU "
        "target), check each against PyTorch, and write a complete Triton model repository.",
    )
    add_settings_arguments(parser)
    add_checkpoint_arguments(parser)
    parser.add_argument(
        "--out", metavar="DIR", help="model repository to create (must not exist or be empty)"
    )
    parser.add_argument(
        "--into",
        metavar="REPOSITORY",
        help="an existing model repository: add this preset beside the ones there (give each its own "
        "--name-prefix), or, when it is there already, the next version of its networks",
    )
    parser.add_argument(
        "--name-prefix",
        default="",
        metavar="NAME",
        help="serve the models as NAME_magnet, NAME_magnet_pipeline, ... (several presets in one repository); "
        "default: the plain names",
    )
    parser.add_argument(
        "--network-version",
        type=int,
        default=0,
        metavar="N",
        help="pin the pipeline to version N of the networks (default: the newest the server has loaded)",
    )
    parser.add_argument("--target", choices=TARGETS, default="cpu", help="the device kind that serves it")
    parser.add_argument(
        "--engine",
        choices=sorted({r.engine for r in RUNTIMES}),
        help=f"the runtime on that device (default: the target's first); {engine_help()}",
    )
    parser.add_argument(
        "--precision",
        choices=sorted({p for r in RUNTIMES for p in r.precisions}),
        default="fp32",
        help="network precision: "
        + "; ".join(f"{r.name} {', '.join(r.precisions)}" for r in RUNTIMES if len(r.precisions) > 1),
    )
    parser.add_argument(
        "--calibration-images",
        nargs="+",
        default=(),
        metavar="IMAGE",
        help="int8: images whose patches calibrate the backbone (default: the sample street scene)",
    )
    parser.add_argument("--max-batch", type=int, default=8, help="largest batch of the networks")
    parser.add_argument(
        "--pipeline-instances", type=int, default=2, help="concurrent magnet_pipeline executions"
    )
    parser.add_argument("--network-instances", type=int, default=1, help="instances of each network model")
    parser.add_argument(
        "--onnx-threads",
        type=int,
        default=0,
        help="threads per CPU network instance, onnxruntime or OpenVINO (0: the cores shared among the instances)",
    )
    parser.add_argument(
        "--onnx-spinning",
        action="store_true",
        help="let onnxruntime's threads spin between runs (faster alone, steals cores from the pipeline)",
    )
    parser.add_argument(
        "--no-onnx-memory-arena",
        action="store_true",
        help="turn off onnxruntime's CPU memory arena: each network instance keeps about 0.35 GB instead of "
        "its high-water mark (4.5 GB for the cityscapes-fast backbone), at about 30%% more network time",
    )
    parser.add_argument(
        "--pipeline-threads",
        type=int,
        default=0,
        help="PyTorch threads per magnet_pipeline instance for its own steps (0: all the server's CPUs)",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help="larger images are refused (default: 16 MiB pixels, or the preset's finest scale when larger: "
        "25 MP for inria and gleason)",
    )
    parser.add_argument(
        "--max-patches-per-request",
        type=int,
        default=0,
        metavar="N",
        help="refuse a request whose settings would refine more patches (0: no cap)",
    )
    parser.add_argument(
        "--max-points-per-request",
        type=int,
        default=0,
        metavar="N",
        help="refuse a request whose settings would replace more points (0: no cap)",
    )
    parser.add_argument(
        "--max-queue-size",
        type=int,
        default=None,
        metavar="N",
        help="requests that may wait for a magnet_pipeline instance; one more is answered UNAVAILABLE at "
        "once (default: 4 per pipeline instance, so a queued request waits behind at most 4 runs of "
        "each; 0: no limit)",
    )
    parser.add_argument(
        "--queue-timeout-ms",
        type=int,
        default=0,
        metavar="MS",
        help="answer a request still queued after MS milliseconds UNAVAILABLE instead of running it; a "
        "client may ask for less per request, never more (default 0: none, since the queue limit already "
        "bounds the wait and a client's own deadline cancels its request)",
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the networks' warm-up at load")
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="gpu/torch: replay one CUDA graph per batch size"
    )
    parser.add_argument(
        "--progressive",
        action="store_true",
        help="also serve magnet_pipeline_progressive, which streams a class map per stage (gRPC streaming)",
    )
    parser.add_argument(
        "--work-dir", metavar="DIR", help="keep ONNX files, engines and the timing cache here"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet_triton.cli_args import settings_from_args
    from magnet_triton.export.build import export_repository
    from magnet_triton.export.repository import RepositoryOptions, default_max_image_pixels

    if (args.out is None) == (args.into is None):
        raise MagnetError("give one of --out (a new repository) or --into (an existing one)")
    settings = settings_from_args(args)
    options = RepositoryOptions(
        name_prefix=args.name_prefix,
        network_version=args.network_version,
        target=args.target,
        engine=args.engine,
        max_batch=args.max_batch,
        pipeline_instances=args.pipeline_instances,
        network_instances=args.network_instances,
        onnx_threads=args.onnx_threads,
        onnx_spinning=args.onnx_spinning,
        onnx_memory_arena=not args.no_onnx_memory_arena,
        pipeline_threads=args.pipeline_threads,
        max_image_pixels=(
            default_max_image_pixels(settings) if args.max_image_pixels is None else args.max_image_pixels
        ),
        max_patches_per_request=args.max_patches_per_request,
        max_points_per_request=args.max_points_per_request,
        max_queue_size=args.max_queue_size,
        queue_timeout_ms=args.queue_timeout_ms,
        warmup=not args.no_warmup,
        precision=args.precision,
        cuda_graphs=args.cuda_graphs,
        progressive=args.progressive,
    )
    start = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    if args.random_weights is not None:
        progress(f"using seeded random weights (seed {args.random_weights}): the class maps mean nothing")
    out = export_repository(
        settings,
        Path(args.out or args.into),
        backbone_checkpoint=args.backbone,
        refiner_checkpoints=args.refiner,
        random_seed=args.random_weights,
        options=options,
        work_dir=args.work_dir,
        progress=progress,
        calibration_images=args.calibration_images,
        into=args.into is not None,
    )
    print(f"serve it with: magnet-triton serve --model-repository {out}")
    return 0
