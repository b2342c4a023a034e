"""``magnet-triton synthesize``: a folder of synthetic street scenes and their exact labels.

Writes ``images/scene_SEED.png`` (RGB) and ``labels/scene_SEED.png`` (palette PNGs of Cityscapes train
ids, 255 = ignore, black), one pair per seed ``S, S+1, ..., S+N-1``, and ``scenes.json`` saying how
they were made. Training and evaluation read this layout (:func:`scene_pairs`).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from magnet_triton.errors import MagnetError

IMAGES, LABELS, MANIFEST = "images", "labels", "scenes.json"


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (W, H); a MagnetError for anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise MagnetError(f"a size is WIDTHxHEIGHT, like 2048x1024; got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _size_argument(text: str) -> tuple[int, int]:
    # argparse shows an ArgumentTypeError's own message (a ValueError's becomes "invalid value").
    try:
        return parse_size(text)
    except MagnetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def label_palette() -> np.ndarray:
    """256 x 3 uint8: the Cityscapes colours for train ids 0..18, black for the rest (255 = ignore)."""
    from magnet_triton.client.palettes import CITYSCAPES

    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(CITYSCAPES)] = CITYSCAPES
    return palette


def synthesize(out: Path, count: int, seed: int, size: tuple[int, int], progress=None) -> list[str]:
    """Write ``count`` scenes of ``size`` (W, H) with seeds ``seed..seed+count-1`` under ``out``.

    Returns the stems written. Raises MagnetError for a bad count or size, or an unwritable folder.
    """
    from PIL import Image

    from magnet_triton.imageio import save_atomically, write_class_map
    from magnet_triton.synthetic import scene

    if count < 1:
        raise MagnetError(f"--count must be at least 1, got {count}")
    if seed < 0:
        raise MagnetError(f"--seed must be >= 0, got {seed}")
    try:
        (out / IMAGES).mkdir(parents=True, exist_ok=True)
        (out / LABELS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MagnetError(f"cannot create {out}: {e.strerror or e}") from e
    palette = label_palette()
    stems = []
    for s in range(seed, seed + count):
        image, labels = scene(size[0], size[1], s)
        stem = f"scene_{s:06d}"
        save_atomically(Image.fromarray(image), out / IMAGES / f"{stem}.png", "PNG")
        write_class_map(out / LABELS / f"{stem}.png", labels, palette)
        stems.append(stem)
        if progress is not None:
            progress(f"{len(stems)}/{count} {stem}")
    record = {
        "generator": "magnet_triton.synthetic.scene",
        "size": list(size),
        "seeds": [seed, seed + count - 1],
    }
    (out / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
    return stems


def scene_pairs(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """(stem, image path, label path) of every scene in ``folder`` (the layout :func:`synthesize` writes,
    or any ``images/``, ``labels/`` pair of PNG folders matched by stem), sorted by stem.

    Raises:
        MagnetError: a missing folder, no scenes, or an image without a label.
    """
    root = Path(folder)
    images, labels = root / IMAGES, root / LABELS
    for sub in (images, labels):
        if not sub.is_dir():
            raise MagnetError(f"{root} has no {sub.name}/ folder; make one with magnet-triton synthesize")
    found = sorted(images.glob("*.png"))
    if not found:
        raise MagnetError(f"{images} holds no .png images")
    pairs = []
    for image in found:
        label = labels / image.name
        if not label.is_file():
            raise MagnetError(f"{image} has no label {label}")
        pairs.append((image.stem, image, label))
    return pairs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synthesize",
        help="write synthetic street scenes with exact Cityscapes labels",
        description="Draw street scenes procedurally (one per seed) and write images/*.png and "
        "labels/*.png (palette PNGs of Cityscapes train ids, 255 = ignore).",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    parser.add_argument("--count", type=int, required=True, metavar="N", help="number of scenes")
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the first scene (default 0)"
    )
    parser.add_argument(
        "--size", type=_size_argument, default=(2048, 1024), metavar="WxH", help="default 2048x1024"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    stems = synthesize(Path(args.out), args.count, args.seed, args.size)
    width, height = args.size
    print(
        f"wrote {len(stems)} scenes of {width}x{height} (seeds {args.seed}..{args.seed + len(stems) - 1}) to {args.out}"
    )
    return 0
