"""``magnet-triton evaluate``: the paper's four methods on a folder of labelled scenes.

Writes ``OUT/table.md`` (the methods' mIoU, mBA, pixel accuracy and time, then the per-class IoU),
``OUT/comparison.json`` (every score, per image too), ``OUT/crops.png`` (image, Downsample, MagNet and
labels where thin structures differ) and the class maps under ``OUT/predictions/<mode>/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from magnet_triton.errors import MagnetError
from magnet_triton.settings import PRESETS
from magnet_triton.training.settings_args import add_model_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    from magnet_triton.cli_args import add_checkpoint_arguments

    parser = subparsers.add_parser(
        "evaluate",
        help="Downsample, Patching, MagNet-Fast and MagNet on labelled scenes: mIoU, mBA, a figure",
        description="Segment every scene of a folder (images/, labels/, as synthesize writes) with the four "
        "methods of the MagNet paper and the same networks, score them (mIoU, per-class IoU, mBA) and "
        "write a Markdown table and a figure of crops.",
    )
    # A -fast preset is MagNet-Fast already; the table derives MagNet-Fast from the full one.
    add_model_arguments(parser, sorted(p for p in PRESETS if not p.endswith("-fast")))
    parser.add_argument("--scenes", required=True, metavar="DIR", help="folder with images/ and labels/")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the table, figure and maps go")
    parser.add_argument(
        "--trained",
        metavar="DIR",
        help="a folder written by magnet-triton train (its backbone.pth and refiner_N.pth)",
    )
    add_checkpoint_arguments(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--max-batch", type=int, default=8, help="patches per network call")
    parser.add_argument("--crops", type=int, default=6, metavar="N", help="rows of the figure (default 6)")
    parser.set_defaults(func=run)


def trained_checkpoints(folder: str | Path, n_refiners: int) -> tuple[Path, list[Path]]:
    """``backbone.pth`` and ``refiner_1.pth`` .. ``refiner_N.pth`` of a training folder, all present."""
    root = Path(folder)
    backbone, refiners = root / "backbone.pth", [root / f"refiner_{i + 1}.pth" for i in range(n_refiners)]
    missing = [p.name for p in (backbone, *refiners) if not p.is_file()]
    if missing:
        raise MagnetError(
            f"{root} lacks {', '.join(missing)}: give the --out of a finished magnet-triton train run"
        )
    return backbone, refiners


def run(args: argparse.Namespace) -> int:
    import json

    from magnet_triton.client.palettes import get_palette
    from magnet_triton.local import load_networks
    from magnet_triton.synthetic.classes import THIN
    from magnet_triton.training.comparison import compare_methods, markdown_table, per_class_table
    from magnet_triton.training.crops import write_crop_figure
    from magnet_triton.training.settings_args import settings_from_args

    settings = settings_from_args(args)
    if args.max_batch < 1:
        raise MagnetError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.crops < 0:
        raise MagnetError(f"--crops must be >= 0, got {args.crops}")
    backbone, refiners = args.backbone, args.refiner
    if args.trained:
        if backbone or refiners:
            raise MagnetError("give --trained or --backbone/--refiner, not both")
        backbone, refiners = trained_checkpoints(args.trained, settings.n_refiners)
    networks = load_networks(
        settings,
        backbone,
        refiners,
        random_seed=args.random_weights,
        device=args.device,
        max_batch=args.max_batch,
    )
    out = Path(args.out)
    comparison = compare_methods(
        args.scenes, settings, networks, out, device=args.device, progress=lambda s: print(f"segmented {s}")
    )
    table = markdown_table(comparison)
    text = (
        f"{len(comparison.stems)} scenes from {args.scenes}, preset {settings.name}\n\n"
        + table
        + "\nIoU per class (%):\n\n"
        + per_class_table(comparison)
    )
    try:
        (out / "table.md").write_text(text)
        record = {
            "preset": settings.name,
            "scenes": str(args.scenes),
            "stems": comparison.stems,
            "seconds_per_image": comparison.seconds_per_image,
            "reports": {mode: report.to_json() for mode, report in comparison.reports.items()},
        }
        (out / "comparison.json").write_text(json.dumps(record, indent=2) + "\n")
    except OSError as e:
        raise MagnetError(f"cannot write into {out}: {e.strerror or e}") from e
    print(table, end="")
    print(f"wrote {out / 'table.md'} and {out / 'comparison.json'}")
    if args.crops:
        crops = write_crop_figure(
            args.scenes,
            comparison.predictions,
            out / "crops.png",
            palette=get_palette("auto", settings.num_classes),
            thin=THIN,
            count=args.crops,
        )
        if crops:
            print(f"wrote {out / 'crops.png'} ({len(crops)} crops)")
        else:
            print("no scene has a thin-class pixel: no crop figure")
    return 0
