"""``magnet-client``: segment image files with a running server, or check its health.

magnet-client segment photos/*.jpg --url 127.0.0.1:8001 --out maps/ --overlay
magnet-client health --url 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from magnet_triton.client.cli_raster import (
    add_raster_arguments,
    check_raster_arguments,
    is_raster_input,
    raster_files,
    run_rasters,
)
from magnet_triton.client.errors import (
    BadRequestError,
    ConnectionFailedError,
    MagnetClientError,
    RequestTimeoutError,
    ServerError,
)
from magnet_triton.client.palettes import PALETTE_NAMES
from magnet_triton.errors import MagnetError
from magnet_triton.request_options import add_option_arguments, options_from_args

EXIT_OK = 0
EXIT_BAD_REQUEST = 1
EXIT_USAGE = 2  # argparse's own status
EXIT_CONNECTION = 3
EXIT_TIMEOUT = 4
EXIT_SERVER = 5
EXIT_INTERRUPTED = 130

EPILOG = """\
exit status:
  0  success (health: the server and every model are ready)
  1  bad input or request: a missing or unreadable file, an image or option the server rejects
  2  command-line usage error
  3  could not connect to the server, even after the retries
  4  a request took longer than --timeout-s
  5  the server failed (health: it is live, but it or a model is not ready)
When several images fail, the status is the highest of their codes.
"""


def exit_code(error: BaseException) -> int:
    """The exit status for ``error`` (see :data:`EPILOG`)."""
    if isinstance(error, ConnectionFailedError):
        return EXIT_CONNECTION
    if isinstance(error, RequestTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(error, ServerError):
        return EXIT_SERVER
    # BadRequestError, SharedMemoryError, DependencyMissingError and local MagnetErrors: fix the input
    # or the environment and run again.
    return EXIT_BAD_REQUEST


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magnet-client",
        description="Call a MagNet model repository served by Triton (gRPC).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from magnet_triton import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("connection")
    group.add_argument(
        "--url", default="127.0.0.1:8001", help="HOST:PORT of Triton's gRPC endpoint (%(default)s)"
    )
    group.add_argument("--timeout-s", type=float, default=300.0, help="seconds per request (%(default)s)")
    group.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="the server's budget per image: past it, it answers with the map refined so far "
        "(default: --timeout-s)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=3,
        help="retries of a request the server did not run: unreachable, busy, or a model reloading (%(default)s)",
    )
    group.add_argument(
        "--retry-backoff-s",
        type=float,
        default=0.5,
        help="first wait between retries, doubling (%(default)s)",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log each step")
    tls = connection.add_argument_group("TLS (a server started with magnet-triton serve --tls-cert)")
    tls.add_argument("--ssl", action="store_true", help="connect over TLS")
    tls.add_argument("--root-certificates", type=Path, metavar="PEM", help="the CA to trust (with --ssl)")
    tls.add_argument("--private-key", type=Path, metavar="PEM", help="client key, for mutual TLS")
    tls.add_argument(
        "--certificate-chain", type=Path, metavar="PEM", help="client certificate, for mutual TLS"
    )
    group.add_argument(
        "--model",
        default="magnet",
        help="the served entry point: magnet, or PREFIX_magnet where one server serves several presets "
        "(%(default)s)",
    )
    group.add_argument(
        "--model-version", type=int, default=None, metavar="N", help="the version of that model to call"
    )
    group.add_argument(
        "--priority",
        type=int,
        default=0,
        help="Triton's request priority, 1 the highest (0: the model's default)",
    )
    group.add_argument(
        "--server-timeout-s",
        type=float,
        default=None,
        metavar="S",
        help="how long the request may wait in the server's queue before it is answered UNAVAILABLE",
    )
    group.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="gRPC metadata sent with every call, e.g. an auth token (repeatable)",
    )

    segment = commands.add_parser(
        "segment",
        parents=[connection],
        help="segment image files or folders; write class maps (and overlays)",
        description="Segment image files (or every image of a folder, or a quoted glob). Writes "
        "OUT/<stem>.png, a palette PNG whose pixels are the class indices (it opens in colour), and on "
        "request OUT/<stem>_coarse.png, OUT/<stem>_confidence.tiff (float32) and OUT/<stem>_overlay.png. "
        "Rasters (.tif/.tiff with the raster extra, or any file with --bands/--scale) are read here, "
        "window by window when over the server's pixel limit, and a georeferenced one also gives "
        "OUT/<stem>_classes.tif, a Cloud-Optimised GeoTIFF with its CRS and transform. "
        "Each file is written whole or not at all, so --resume after an interruption skips what is done.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    segment.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="PNG, JPEG, ... files, folders of them, or globs",
    )
    segment.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the results")
    segment.add_argument(
        "--save",
        default="",
        metavar="coarse,confidence",
        help="also ask for and write the coarse pass's class map and the confidence (comma-separated)",
    )
    segment.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png")
    segment.add_argument(
        "--palette",
        choices=PALETTE_NAMES,
        default="auto",
        help="class map and overlay colours; auto picks by class count",
    )
    segment.add_argument(
        "--grey", action="store_true", help="write class maps as grey PNGs of the indices, without a palette"
    )
    segment.add_argument(
        "--resume", action="store_true", help="skip images whose outputs are all in --out already"
    )
    segment.add_argument(
        "--progressive",
        action="store_true",
        help="stream each stage from magnet_pipeline_progressive (export --progressive) and write the "
        "maps before the last as <stem>_stage<k>.png (k scales done)",
    )
    segment.add_argument("--alpha", type=float, default=0.5, help="overlay colour weight, 0..1 (%(default)s)")
    add_option_arguments(segment, what="the server's")
    segment.add_argument("--concurrency", type=int, default=4, help="requests in flight (%(default)s)")
    segment.add_argument(
        "--raw", action="store_true", help="decode here and send pixels, not the encoded file"
    )
    segment.add_argument(
        "--shared-memory",
        action="store_true",
        help="send pixels through system shared memory (implies --raw; the server must run on this machine)",
    )
    segment.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    add_raster_arguments(segment)
    segment.set_defaults(run=run_segment)

    health = commands.add_parser(
        "health",
        parents=[connection],
        help="print the server's readiness, version and models",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    health.add_argument("--json", action="store_true", help="print the full answer as JSON")
    health.set_defaults(run=run_health)
    return parser


def _client(args: argparse.Namespace) -> Any:
    from magnet_triton.client.core import MagnetClient

    headers = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BadRequestError(f"--header takes NAME=VALUE, got {item!r}")
        headers[name.strip().lower()] = value
    tls_files = (args.root_certificates, args.private_key, args.certificate_chain)
    for path in tls_files:
        if path is not None and not path.is_file():
            raise BadRequestError(f"TLS file {path} does not exist")
    if any(tls_files) and not args.ssl:
        raise BadRequestError("--root-certificates, --private-key and --certificate-chain need --ssl")
    return MagnetClient(
        args.url,
        timeout_s=args.timeout_s,
        retries=args.retries,
        retry_backoff_s=args.retry_backoff_s,
        ssl=args.ssl,
        root_certificates_path=str(args.root_certificates) if args.root_certificates else None,
        private_key_path=str(args.private_key) if args.private_key else None,
        certificate_chain_path=str(args.certificate_chain) if args.certificate_chain else None,
        headers=headers,
        deadline_s=args.deadline_s,
        model=args.model,
        model_version=args.model_version,
        priority=args.priority,
        server_timeout_s=args.server_timeout_s,
    )


# ---------------------------------------------------------------------- segment
#: What a folder given as input contributes: its files with these suffixes (any case), sorted.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _expand(path: Path) -> list[Path]:
    """A file as it is; a folder's image files (not its subfolders'); a glob's matches, when no such file."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise BadRequestError(f"{path} is a folder with no image files ({', '.join(IMAGE_SUFFIXES)})")
        return found
    if not path.exists() and any(c in str(path) for c in "*?["):
        anchor = Path(path.anchor) if path.is_absolute() else Path()
        found = sorted(p for p in anchor.glob(str(path.relative_to(anchor))) if p.is_file())
        if not found:
            raise BadRequestError(f"no file matches {path}")
        return found
    return [path]


def _check_inputs(images: Sequence[Path]) -> list[Path]:
    """The input files (folders and globs expanded), each once; a BadRequestError for missing files or
    two inputs with one stem."""
    unique = list(dict.fromkeys(p for image in images for p in _expand(image)))
    missing = [str(p) for p in unique if not p.is_file()]
    if missing:
        raise BadRequestError(f"no such image file(s): {', '.join(missing)}; check the paths")
    stems: dict[str, Path] = {}
    for path in unique:
        other = stems.setdefault(path.stem, path)
        if other != path:
            raise BadRequestError(
                f"{other} and {path} would both be written as {path.stem}.png; segment them in separate runs"
            )
    return unique


def _outputs_of(path: Path, out: Path, save: Sequence[str], overlay: bool) -> list[Path]:
    """The files one image gives, in the order they are written (the class map last, so that a run cut
    short never leaves the class map without the rest: --resume looks at all of them anyway)."""
    files = [out / f"{path.stem}_{what}.{'tiff' if what == 'confidence' else 'png'}" for what in save]
    if overlay:
        files.append(out / f"{path.stem}_overlay.png")
    return [*files, out / f"{path.stem}.png"]


def run_segment(args: argparse.Namespace) -> int:
    from magnet_triton.client.base import segment_options
    from magnet_triton.client.overlay import write_overlay
    from magnet_triton.client.palettes import get_palette
    from magnet_triton.client.progress import ProgressBar
    from magnet_triton.client.request import OPTIONAL_OUTPUTS
    from magnet_triton.imageio import read_image, write_class_map, write_confidence

    if args.concurrency < 1:
        raise BadRequestError(f"--concurrency must be >= 1, got {args.concurrency}")
    if not 0 <= args.alpha <= 1:
        raise BadRequestError(f"--alpha must be in [0, 1], got {args.alpha}")
    save = [w.strip().lower() for w in args.save.split(",") if w.strip()]
    unknown = sorted(set(save) - set(OPTIONAL_OUTPUTS))
    if unknown:
        raise BadRequestError(f"--save takes {', '.join(OPTIONAL_OUTPUTS)}, not {', '.join(unknown)}")
    if args.progressive and (save or args.raw or args.shared_memory):
        raise BadRequestError(
            "--progressive streams class maps alone: leave out --save, --raw and --shared-memory"
        )
    check_raster_arguments(args)
    images = _check_inputs(args.images)
    overrides = options_from_args(args)
    segment_options(outputs=save, **overrides)  # a bad override fails once here, not once per image
    raw = args.raw or args.shared_memory
    rasters = {p for p in images if is_raster_input(p, args)}
    if rasters and args.progressive:
        raise BadRequestError(
            f"--progressive streams whole images; {sorted(map(str, rasters))[0]} is read as a raster: "
            "segment rasters without --progressive"
        )

    def outputs_of(path: Path) -> list[Path]:
        if path in rasters:
            return raster_files(path, args, save)
        return _outputs_of(path, args.out, save, args.overlay)

    skipped = 0
    if args.resume:
        done = [p for p in images if all(f.is_file() for f in outputs_of(p))]
        skipped, images = len(done), [p for p in images if p not in set(done)]
    for path in images:  # what a run killed mid-write left: the temporaries of the files to write again
        for output in outputs_of(path):
            for partial in output.parent.glob(f".{glob.escape(output.name)}.*"):
                partial.unlink(missing_ok=True)
    plain = [p for p in images if p not in rasters]
    with _client(args) as client:
        needs_classes = args.palette == "auto" and (args.overlay or not args.grey) and images
        num_classes = client.num_classes() if needs_classes else None
        palette = None if args.grey else get_palette(args.palette, num_classes)

        def stream(path: Path) -> Any:
            """The final result; each stage before it is written once the next one has come (the last
            answer is the class map itself; a deadline's cut repeats its last stage as the answer)."""
            previous = None
            for result in client.segment_progressive(path, **overrides):
                if previous is not None and previous.scales_done != result.scales_done:
                    stage_file = args.out / f"{path.stem}_stage{previous.scales_done}.png"
                    write_class_map(stage_file, previous.segmentation, palette)
                previous = result
            return previous

        def process(path: Path) -> None:
            pixels = read_image(path) if raw else None
            source = pixels if pixels is not None else path
            if args.progressive:
                result = stream(path)
            else:
                result = client.segment(
                    source, via_shared_memory=args.shared_memory, outputs=save, **overrides
                )
            if "coarse" in save:
                write_class_map(args.out / f"{path.stem}_coarse.png", result.coarse_segmentation, palette)
            if "confidence" in save:
                write_confidence(args.out / f"{path.stem}_confidence.tiff", result.confidence)
            if args.overlay:
                image = pixels if pixels is not None else read_image(path)
                write_overlay(
                    args.out / f"{path.stem}_overlay.png",
                    image,
                    result.segmentation,
                    args.palette,
                    args.alpha,
                    num_classes=num_classes,
                )
            write_class_map(args.out / f"{path.stem}.png", result.segmentation, palette)
            logging.getLogger(__name__).info("%s: %.2f s", path, result.latency_s)

        status, written = EXIT_OK, 0
        bar = ProgressBar(len(plain), enabled=None if not args.quiet and plain else False)
        with (
            bar,
            ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="magnet-client") as pool,
        ):
            futures: dict[Future[None], Path] = {pool.submit(process, path): path for path in plain}
            try:
                for future in as_completed(futures):
                    bar.update()
                    try:
                        future.result()
                        written += 1
                    except (MagnetClientError, MagnetError) as error:
                        bar.note(f"magnet-client: error: {futures[future]}: {error}")
                        status = max(status, exit_code(error))
                        if isinstance(error, ConnectionFailedError):
                            break  # every other image would wait through the same retries
            finally:
                for future in futures:
                    future.cancel()
        if rasters and status != EXIT_CONNECTION:
            raster_status, raster_written = run_rasters(
                client,
                [p for p in images if p in rasters],
                args,
                save=save,
                palette=palette,
                overrides=overrides,
            )
            status, written = max(status, raster_status), written + raster_written
    if not args.quiet:
        already = f" ({skipped} already there, skipped)" if skipped else ""
        print(f"wrote {written} of {len(images)} class maps to {args.out}{already}")
    return status


# ---------------------------------------------------------------------- health
def run_health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        health = client.health()
    all_ready = health["ready"] and all(model["ready"] for model in health["models"].values())
    if args.json:
        print(json.dumps(health, indent=2))
    else:
        server = health["server"]
        print(
            f"{health['url']}: {server['name']} {server['version']}, "
            f"live: {'yes' if health['live'] else 'no'}, ready: {'yes' if health['ready'] else 'no'}"
        )
        for name, model in health["models"].items():
            versions = ", ".join(f"v{version} {state}" for version, state in model["versions"].items())
            reason = f" ({model['reason']})" if model["reason"] else ""
            print(f"  {name:<20} {'ready' if model['ready'] else 'NOT READY':<10} {versions}{reason}")
    return EXIT_OK if all_ready else EXIT_SERVER


# ---------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits with 2 on usage errors)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="magnet-client: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.run(args)
    except (MagnetClientError, MagnetError) as error:
        print(f"magnet-client: error: {error}", file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        print("magnet-client: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
