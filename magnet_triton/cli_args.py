"""Command-line arguments shared by the sub-commands that run or export MagNet."""

from __future__ import annotations

import argparse

from magnet_triton.settings import MODES, PATCH_ORDERS, PRESETS, Settings


def add_settings_arguments(parser: argparse.ArgumentParser, *, default_preset: str | None = None) -> None:
    """``--preset`` and the per-run overrides of its fields."""
    parser.add_argument(
        "--preset",
        required=default_preset is None,
        default=default_preset,
        choices=sorted(PRESETS),
        help="published settings to start from",
    )
    parser.add_argument("--mode", choices=MODES, help="override the preset's mode")
    parser.add_argument("--n-points", type=float, help="> 1: points per scale; <= 1: fraction of the pixels")
    parser.add_argument(
        "--n-patches", type=int, help="-1: every patch; k > 0: the k most uncertain (MagNet-Fast)"
    )
    parser.add_argument("--patch-order", choices=PATCH_ORDERS, help="which patches MagNet-Fast refines")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The preset named by ``--preset`` with the overrides given on the command line."""
    from magnet_triton.settings import get_preset

    return get_preset(
        args.preset,
        mode=args.mode,
        n_points=args.n_points,
        n_patches=args.n_patches,
        patch_order=args.patch_order,
    )


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
