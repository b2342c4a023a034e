"""``magnet-triton demo``: the README's main job in one command.

Export a CPU model repository, start the bundled ``tritonserver`` on it, segment an image over gRPC,
write the class map and a coloured overlay, and stop the server. Without checkpoints it uses seeded
random weights and says so: the pipeline, the server and the client are real, the classes are not.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_NOTICE = (
    "NOTE: no checkpoints given, so the networks have seeded RANDOM weights. Everything runs for real "
    "(export, Triton, the MagNet pipeline, gRPC), but the class map is meaningless. Pass --backbone and "
    "--refiner with the authors' checkpoints for real segmentations."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from magnet_triton.cli_args import add_checkpoint_arguments, add_settings_arguments

    parser = subparsers.add_parser(
        "demo",
        help="export, serve and segment one image over gRPC, end to end",
        description="Export a CPU model repository, start the bundled tritonserver, segment an image over "
        "gRPC, write the class map and an overlay, and stop the server.",
    )
    add_settings_arguments(parser, default_preset="cityscapes-fast")
    add_checkpoint_arguments(parser)
    parser.add_argument(
        "--image", metavar="FILE", help="image to segment (default: a synthetic street scene)"
    )
    parser.add_argument("--out", default="runs/demo", metavar="DIR", help="where everything is written")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet_triton.cli_args import settings_from_args
    from magnet_triton.client import MagnetClient, get_palette, write_overlay
    from magnet_triton.export.build import export_repository
    from magnet_triton.imageio import read_image, write_class_map
    from magnet_triton.sample import street_scene
    from magnet_triton.server import TritonServer

    settings = settings_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    random_seed = args.random_weights
    if args.backbone is None and random_seed is None:
        random_seed = 0
    if random_seed is not None:
        print(RANDOM_WEIGHTS_NOTICE)
    if args.image:
        image_path = Path(args.image)
    else:
        from PIL import Image

        image_path = out / "sample_street.png"
        Image.fromarray(street_scene()).save(image_path)
        print(f"sample image (synthetic, made by this command): {image_path}")

    # The demo's own earlier repository is replaced; a folder it did not write is refused.
    repository = export_repository(
        settings,
        out / "model_repository",
        backbone_checkpoint=args.backbone,
        refiner_checkpoints=args.refiner,
        random_seed=random_seed,
        replace=True,
        progress=print,
    )

    print("starting the bundled tritonserver ...")
    with TritonServer(repository, log_path=out / "tritonserver.log") as server:
        print(f"serving on grpc {server.grpc_url}")
        with MagnetClient(server.grpc_url, timeout_s=1800) as client:
            start = time.perf_counter()
            result = client.segment(image_path)
            elapsed = time.perf_counter() - start
    print(f"segmented {image_path} over gRPC in {elapsed:.1f} s; server stopped")

    class_map_path = out / f"{image_path.stem}_classes.png"
    overlay_path = out / f"{image_path.stem}_overlay.png"
    write_class_map(class_map_path, result.segmentation)
    write_overlay(
        overlay_path, read_image(image_path), result.segmentation, get_palette("auto", settings.num_classes)
    )
    print(f"class map: {class_map_path}\noverlay:   {overlay_path}")
    if random_seed is not None:
        print(RANDOM_WEIGHTS_NOTICE)
    return 0
