"""Command-line arguments shared by the sub-commands that run or export MagNet."""

from __future__ import annotations

import argparse

from magnet_triton.request_options import add_option_arguments, options_from_args
from magnet_triton.settings import PRESETS, Settings


def add_settings_arguments(parser: argparse.ArgumentParser, *, default_preset: str | None = None) -> None:
    """``--preset`` and the per-run overrides of its fields (one flag per request option)."""
    parser.add_argument(
        "--preset",
        required=default_preset is None,
        default=default_preset,
        choices=sorted(PRESETS),
        help="published settings to start from" + (f" (default: {default_preset})" if default_preset else ""),
    )
    add_option_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The preset named by ``--preset`` with the overrides given on the command line."""
    from magnet_triton.settings import get_preset

    return get_preset(args.preset, **options_from_args(args))


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backbone``, ``--refiner`` and ``--random-weights``."""
    parser.add_argument("--backbone", metavar="FILE", help="backbone checkpoint in the authors' layout")
    parser.add_argument(
        "--refiner",
        metavar="FILE",
        nargs="+",
        default=[],
        help="one refiner checkpoint per scale transition, or one shared file (end the list with --)",
    )
    parser.add_argument(
        "--random-weights",
        type=int,
        metavar="SEED",
        help="seeded random weights instead of checkpoints, for trying the bundle (the classes mean nothing)",
    )
