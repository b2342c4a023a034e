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
    parser = subparsers.add_parser(
        "demo",
        help="export, serve and segment one image over gRPC, end to end",
        description="Export a CPU model repository, start the bundled tritonserver, segment an image over "
        "gRPC, write the class map and an overlay, and stop the server.",
    )
    parser.add_argument(
        "--preset", default="cityscapes-fast", help="preset to export (default: cityscapes-fast)"
    )
    parser.add_argument(
        "--image", metavar="FILE", help="image to segment (default: a synthetic street scene)"
    )
    parser.add_argument("--backbone", metavar="FILE", help="backbone checkpoint (else random weights)")
    parser.add_argument("--refiner", metavar="FILE", nargs="+", default=[], help="refiner checkpoint(s)")
    parser.add_argument("--out", default="runs/demo", metavar="DIR", help="where everything is written")
    parser.add_argument("--mode", help="override the preset's mode for the request")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shutil

    from magnet_triton.client import MagnetClient, get_palette, write_overlay
    from magnet_triton.export import cli as export_cli
    from magnet_triton.imageio import read_image, write_class_map
    from magnet_triton.sample import street_scene
    from magnet_triton.server import TritonServer
    from magnet_triton.settings import get_preset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    random_weights = args.backbone is None
    if random_weights:
        print(RANDOM_WEIGHTS_NOTICE)
    if args.image:
        image_path = Path(args.image)
    else:
        from PIL import Image

        image_path = out / "sample_street.png"
        Image.fromarray(street_scene()).save(image_path)
        print(f"sample image (synthetic, made by this command): {image_path}")

    repository = out / "model_repository"
    if repository.exists():
        shutil.rmtree(repository)
    export_args = ["--preset", args.preset, "--out", str(repository), "--target", "cpu"]
    if random_weights:
        export_args += ["--random-weights", "0"]
    else:
        export_args += ["--backbone", args.backbone, "--refiner", *args.refiner]
    parser = argparse.ArgumentParser()
    export_cli.register(parser.add_subparsers())
    export_cli.run(parser.parse_args(["export", *export_args]))

    print("starting the bundled tritonserver ...")
    with TritonServer(repository, log_path=out / "tritonserver.log") as server:
        print(f"serving on grpc {server.grpc_url}, http {server.http_url}")
        with MagnetClient(server.grpc_url, timeout_s=1800) as client:
            start = time.perf_counter()
            result = client.segment(image_path, mode=args.mode)
            elapsed = time.perf_counter() - start
    print(f"segmented {image_path} over gRPC in {elapsed:.1f} s; server stopped")

    class_map_path = out / f"{image_path.stem}_classes.png"
    overlay_path = out / f"{image_path.stem}_overlay.png"
    write_class_map(class_map_path, result.segmentation)
    settings = get_preset(args.preset)
    write_overlay(
        overlay_path, read_image(image_path), result.segmentation, get_palette("auto", settings.num_classes)
    )
    print(f"class map: {class_map_path}\noverlay:   {overlay_path}")
    if random_weights:
        print(RANDOM_WEIGHTS_NOTICE)
    return 0
