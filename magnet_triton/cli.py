"""``magnet-triton``: the command line of the bundle.

Each sub-command lives in the module that owns its stage and exposes ``register(subparsers)``; this
file only wires them together and turns :class:`MagnetError` into a one-line message and exit 1.
Modules are imported when the parser is built, so each must keep heavy imports (torch, onnx,
TensorRT) inside its functions: ``magnet-triton --help`` works on a bare machine.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from magnet_triton import __version__
from magnet_triton.errors import MagnetError

#: Modules that add sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES = (
    "magnet_triton.segment_local",
    "magnet_triton.export.cli",
    "magnet_triton.export.parity",
    "magnet_triton.server.command",
    "magnet_triton.server.probe_command",
    "magnet_triton.evaluate",
    "magnet_triton.synthetic.command",
    "magnet_triton.training.command",
    "magnet_triton.training.evaluate_command",
    "magnet_triton.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magnet-triton",
        description="MagNet progressive semantic segmentation for NVIDIA Triton and TensorRT.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except MagnetError as e:
        print(f"magnet-triton {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"magnet-triton {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
