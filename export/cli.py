"""``magnet-triton export``: checkpoints in, a complete Triton model repository out.

The networks are exported and checked (:func:`~magnet_triton.export.artifacts.build_artifacts`), then
the repository is written next to the destination and renamed into place, so a folder named ``--out``
is always a whole repository, never a half-written one.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from magnet_triton.errors import MagnetError

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
        "--out", required=True, metavar="DIR", help="model repository to create (must not exist or be empty)"
    )
    parser.add_argument(
        "--target", choices=("cpu", "gpu"), default="cpu", help="cpu: onnxruntime; gpu: TensorRT"
    )
    parser.add_argument(
        "--precision", choices=("fp32", "fp16"), default="fp32", help="engine precision (gpu)"
    )
    parser.add_argument("--max-batch", type=int, default=8, help="largest batch of the networks")
    parser.add_argument(
        "--pipeline-instances", type=int, default=2, help="concurrent magnet_pipeline executions"
    )
    parser.add_argument("--network-instances", type=int, default=1, help="instances of each network model")
    parser.add_argument(
        "--onnx-threads", type=int, default=0, help="onnxruntime threads per CPU network (0: all)"
    )
    parser.add_argument(
        "--pipeline-threads",
        type=int,
        default=0,
        help="PyTorch threads per magnet_pipeline instance for its own steps (0: all the server's CPUs)",
    )
    parser.add_argument(
        "--max-image-pixels", type=int, default=16 * 1024 * 1024, help="larger images are refused"
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the networks' warm-up at load")
    parser.add_argument(
        "--work-dir", metavar="DIR", help="keep ONNX files, engines and the timing cache here"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet_triton.cli_args import settings_from_args
    from magnet_triton.export.artifacts import build_artifacts
    from magnet_triton.export.repository import RepositoryOptions, write_repository

    settings = settings_from_args(args)
    options = RepositoryOptions(
        target=args.target,
        max_batch=args.max_batch,
        pipeline_instances=args.pipeline_instances,
        network_instances=args.network_instances,
        onnx_threads=args.onnx_threads,
        pipeline_threads=args.pipeline_threads,
        max_image_pixels=args.max_image_pixels,
        warmup=not args.no_warmup,
    )
    out = Path(args.out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MagnetError(f"{out} already exists and is not an empty folder; choose a new --out")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as e:
        raise MagnetError(f"cannot write into {parent}: {e.strerror or e}") from e

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    if args.random_weights is not None:
        progress(f"using seeded random weights (seed {args.random_weights}): the class maps mean nothing")
    try:
        work = Path(args.work_dir).resolve() if args.work_dir else staging / "artifacts"
        artifacts = build_artifacts(
            settings,
            backbone_checkpoint=Path(args.backbone) if args.backbone else None,
            refiner_checkpoints=[Path(p) for p in args.refiner],
            random_seed=args.random_weights,
            out_dir=work,
            target=args.target,
            precision=args.precision,
            max_batch=args.max_batch,
            progress=progress,
        )
        use_engines = args.target == "gpu"
        provenance = {**artifacts.provenance, "parity": {k: r.to_dict() for k, r in artifacts.parity.items()}}
        progress("writing the model repository")
        write_repository(
            staging / "repository",
            settings,
            options,
            backbone_model=artifacts.backbone_engine if use_engines else artifacts.backbone_onnx,
            refiner_models=artifacts.refiner_engines if use_engines else artifacts.refiner_onnx,
            provenance=provenance,
        )
        if out.exists():
            out.rmdir()
        (staging / "repository").rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"model repository written: {out}")
    print(f"serve it with: magnet-triton serve --model-repository {out}")
    return 0
