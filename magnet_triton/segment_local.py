"""``magnet-triton segment-local``: the reference pipeline on one image, in this process."""

from __future__ import annotations

import argparse
import logging
import time

from magnet_triton.cli_args import add_checkpoint_arguments, add_settings_arguments

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment-local",
        help="segment one image with the in-process reference pipeline",
        description="Run the reference MagNet pipeline in this process and write the class map as a PNG "
        "of class indices at the image's size.",
    )
    add_settings_arguments(parser)
    add_checkpoint_arguments(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--max-batch", type=int, default=8, help="patches per network call")
    parser.add_argument("--coarse-out", metavar="FILE", help="also write the coarse class map here")
    parser.add_argument("image", help="input image (PNG, JPEG, ...)")
    parser.add_argument("-o", "--out", required=True, metavar="OUT.png", help="class map to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from magnet_triton.cli_args import settings_from_args
    from magnet_triton.errors import MagnetError
    from magnet_triton.imageio import read_image, write_class_map
    from magnet_triton.local import load_networks
    from magnet_triton.pipeline import run_magnet

    settings = settings_from_args(args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise MagnetError(f"--device {args.device} asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    if args.max_batch < 1:
        raise MagnetError(f"--max-batch must be >= 1, got {args.max_batch}")
    image = read_image(args.image)
    networks = load_networks(
        settings,
        args.backbone,
        args.refiner,
        random_seed=args.random_weights,
        device=args.device,
        max_batch=args.max_batch,
    )
    start = time.perf_counter()
    result = run_magnet(
        image,
        settings,
        networks,
        device=args.device,
        return_coarse=bool(args.coarse_out),
        return_confidence=False,
    )
    elapsed = time.perf_counter() - start
    write_class_map(args.out, result.segmentation)
    if args.coarse_out:
        write_class_map(args.coarse_out, result.coarse_segmentation)
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings_s.items())
    print(
        f"{args.image}: {image.shape[1]}x{image.shape[0]}, preset {settings.name}, mode {settings.mode}: "
        f"{elapsed:.2f} s ({stages}) -> {args.out}"
    )
    return 0
