"""``magnet-triton train``: the backbone, then each refiner, on a folder of scenes with labels.

The folder is what ``magnet-triton synthesize`` writes (``images/*.png``, ``labels/*.png``). The
checkpoints land in ``--out`` as ``backbone.pth`` and ``refiner_N.pth``, in the authors' key layout, so
``segment-local``, ``export`` and ``evaluate`` take them as they take the authors' files.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from magnet_triton.training.settings_args import add_model_arguments

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a preset's backbone and refiners on a folder of labelled scenes",
        description="Train the backbone on crops of every scale of the preset, then each refiner on the "
        "backbone's fine and coarse predictions. Writes OUT/backbone.pth and OUT/refiner_N.pth (authors' "
        "layout) and OUT/train_state.pt, from which --resume continues an interrupted run.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--scenes", required=True, metavar="DIR", help="folder with images/ and labels/ (synthesize)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="where checkpoints and state go")
    parser.add_argument("--steps", type=int, default=1000, metavar="N", help="backbone steps (default 1000)")
    parser.add_argument(
        "--refiner-steps", type=int, default=300, metavar="N", help="steps per refiner (default 300)"
    )
    parser.add_argument("--batch", type=int, default=8, metavar="B", help="crops per step (default 8)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "bf16"),
        help="fp16 autocast needs --device cuda (default fp32)",
    )
    parser.add_argument("--seed", type=int, default=0, help="initial weights and crop sampling (default 0)")
    parser.add_argument(
        "--save-every", type=int, default=50, metavar="N", help="steps between saves (default 50)"
    )
    parser.add_argument(
        "--calibration-batches",
        type=int,
        default=8,
        metavar="N",
        help="batches that set BatchNorm statistics at each phase's end (default 8; 0 keeps them)",
    )
    parser.add_argument(
        "--backbone-from",
        metavar="FILE",
        help="train only the refiners, on this backbone checkpoint (authors' layout; copied to OUT)",
    )
    parser.add_argument(
        "--half-checkpoints", action="store_true", help="write the .pth files in FP16 (half the size)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from magnet_triton.errors import MagnetError
    from magnet_triton.training.data import SceneSet
    from magnet_triton.training.loop import TrainConfig, train
    from magnet_triton.training.progress import Progress
    from magnet_triton.training.settings_args import settings_from_args

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise MagnetError(f"--device {args.device} asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    config = TrainConfig(
        steps=args.steps,
        refiner_steps=args.refiner_steps,
        batch=args.batch,
        lr=args.lr,
        precision=args.precision,
        seed=args.seed,
        save_every=args.save_every,
        calibration_batches=args.calibration_batches,
        half_checkpoints=args.half_checkpoints,
        backbone_from=args.backbone_from,
    )
    settings = settings_from_args(args)
    data = SceneSet(args.scenes, settings)
    print(f"{len(data)} scenes from {args.scenes}; preset {settings.name}; writing to {args.out}")
    result = train(
        settings, data, Path(args.out), config, device=args.device, resume=args.resume, progress=Progress
    )
    for name, path in result.checkpoints.items():
        losses = result.losses.get(name)
        if losses:
            tail = f"final loss {sum(losses[-10:]) / len(losses[-10:]):.4f}"
        elif name == "backbone" and args.backbone_from:
            tail = f"copied from {args.backbone_from}"
        else:
            tail = "done earlier"
        print(f"{name}: {path} ({tail})")
    return 0
