"""``--preset NAME`` or ``--settings FILE``: the model ``train`` and ``evaluate`` work on.

A settings file is the JSON of :meth:`Settings.to_dict` (every field), for a model no preset describes:
a smaller copy of a preset for a CPU run, say. Both commands take the same file, so the checkpoints
``train`` writes fit the networks ``evaluate`` builds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from magnet_triton.errors import MagnetError
from magnet_triton.settings import PRESETS, Settings


def add_model_arguments(parser: argparse.ArgumentParser, presets: list[str] | None = None) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--preset", choices=presets or sorted(PRESETS), help="published settings")
    group.add_argument(
        "--settings", metavar="FILE.json", help="settings of a custom model (the fields of Settings)"
    )


def read_settings(path: str | Path) -> Settings:
    """The :class:`Settings` in a JSON file, or a MagnetError saying what is wrong with it."""
    from magnet_triton.settings import settings_from_dict

    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise MagnetError(f"cannot read settings file {path}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise MagnetError(f"settings file {path} is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise MagnetError(f"settings file {path} must hold a JSON object of Settings fields")
    try:
        return settings_from_dict(data)
    except MagnetError as e:
        raise MagnetError(f"settings file {path}: {e}") from e


def settings_from_args(args: argparse.Namespace) -> Settings:
    from magnet_triton.settings import get_preset

    return read_settings(args.settings) if args.settings else get_preset(args.preset)
