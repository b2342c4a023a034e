"""``magnet-triton score`` and ``magnet-triton compare``: accuracy of saved class maps.

``score`` matches prediction and label PNGs by file stem and reports mIoU, per-class IoU and mBA (see
:mod:`magnet_triton.metrics`). ``compare`` says how far two class maps agree, e.g. the server's output
against the in-process pipeline's. Class maps are single-channel PNGs of class indices (8- or 16-bit
grey, or palette images whose indices are the classes).

numpy and Pillow are imported inside the functions so that ``magnet-triton --help`` stays instant.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magnet_triton.errors import MagnetError

if TYPE_CHECKING:
    from magnet_triton.metrics import MapComparison


def collect_maps(sources: Sequence[str | Path], what: str) -> dict[str, Path]:
    """Map file stem -> path for the PNGs named in ``sources`` (files, or folders searched for ``*.png``)."""
    found: dict[str, Path] = {}
    for source in map(Path, sources):
        if source.is_dir():
            paths = sorted(source.glob("*.png"))
            if not paths:
                raise MagnetError(f"{what} folder {source} holds no .png files")
        elif source.is_file():
            paths = [source]
        else:
            raise MagnetError(f"{what} path {source} does not exist")
        for path in paths:
            if path.stem in found and found[path.stem] != path:
                raise MagnetError(
                    f"two {what} files share the stem {path.stem!r}: {found[path.stem]} and {path}"
                )
            found[path.stem] = path
    return found


def _names(stems: set[str], limit: int = 5) -> str:
    shown = sorted(stems)[:limit]
    return ", ".join(shown) + (f" and {len(stems) - limit} more" if len(stems) > limit else "")


@dataclass
class ScoreReport:
    """Accuracy over a set of images.

    ``mean_iou`` and ``per_class_iou`` come from the confusion matrix summed over all images;
    ``mean_boundary_accuracy`` is the mean of the per-image mBA values, leaving out images whose label
    has no boundary (NaN).
    """

    num_classes: int
    ignore_index: int
    num_images: int
    mean_iou: float
    per_class_iou: list[float]
    pixel_accuracy: float
    mean_boundary_accuracy: float
    per_image: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; NaN (a class or metric with nothing to score) becomes null."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and math.isnan(value):
                return None
            if isinstance(value, list):
                return [clean(v) for v in value]
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        return clean(
            {
                "num_classes": self.num_classes,
                "ignore_index": self.ignore_index,
                "num_images": self.num_images,
                "mean_iou": self.mean_iou,
                "per_class_iou": self.per_class_iou,
                "pixel_accuracy": self.pixel_accuracy,
                "mean_boundary_accuracy": self.mean_boundary_accuracy,
                "per_image": self.per_image,
            }
        )


def score_files(
    pred_sources: Sequence[str | Path],
    label_sources: Sequence[str | Path],
    *,
    num_classes: int,
    ignore_index: int = 255,
    mba_min_radius: int = 1,
) -> ScoreReport:
    """Score predictions against labels matched by file stem; every label needs a prediction and back."""
    import numpy as np

    from magnet_triton import metrics
    from magnet_triton.imageio import read_class_map

    preds = collect_maps(pred_sources, "prediction")
    labels = collect_maps(label_sources, "label")
    if missing := set(labels) - set(preds):
        raise MagnetError(f"{len(missing)} label(s) have no prediction with the same stem: {_names(missing)}")
    if extra := set(preds) - set(labels):
        raise MagnetError(f"{len(extra)} prediction(s) have no label with the same stem: {_names(extra)}")

    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    per_image: list[dict[str, Any]] = []
    for stem in sorted(labels):
        pred, label = read_class_map(preds[stem]), read_class_map(labels[stem])
        if pred.shape != label.shape:
            raise MagnetError(
                f"{stem}: prediction {preds[stem]} is {pred.shape[1]}x{pred.shape[0]} but label "
                f"{labels[stem]} is {label.shape[1]}x{label.shape[0]} (W x H); predict at the label's size"
            )
        try:
            image_conf = metrics.confusion_matrix(pred, label, num_classes, ignore_index)
        except MagnetError as e:
            raise MagnetError(f"{stem}: {e}") from e
        conf += image_conf
        mba = metrics.mean_boundary_accuracy(
            pred, label, ignore_index=ignore_index, min_radius=mba_min_radius
        )
        scored = int(image_conf.sum())
        per_image.append(
            {
                "name": stem,
                "mean_iou": metrics.mean_iou(image_conf),
                "pixel_accuracy": float(np.trace(image_conf) / scored) if scored else math.nan,
                "mean_boundary_accuracy": mba,
            }
        )
    mbas = [p["mean_boundary_accuracy"] for p in per_image if not math.isnan(p["mean_boundary_accuracy"])]
    total = int(conf.sum())
    return ScoreReport(
        num_classes=num_classes,
        ignore_index=ignore_index,
        num_images=len(per_image),
        mean_iou=metrics.mean_iou(conf),
        per_class_iou=[float(v) for v in metrics.iou_per_class(conf)],
        pixel_accuracy=float(np.trace(conf) / total) if total else math.nan,
        mean_boundary_accuracy=float(sum(mbas) / len(mbas)) if mbas else math.nan,
        per_image=per_image,
    )


def compare_files(
    path_a: str | Path, path_b: str | Path, *, diff_out: str | Path | None = None
) -> MapComparison:
    """Compare two class-map PNGs; with ``diff_out``, also write :func:`metrics.diff_image` there."""
    from PIL import Image

    from magnet_triton import metrics
    from magnet_triton.imageio import read_class_map

    a, b = read_class_map(Path(path_a)), read_class_map(Path(path_b))
    if a.shape != b.shape:
        raise MagnetError(
            f"{path_a} is {a.shape[1]}x{a.shape[0]} but {path_b} is {b.shape[1]}x{b.shape[0]} (W x H)"
        )
    result = metrics.compare_maps(a, b)
    if diff_out is not None:
        try:
            Image.fromarray(metrics.diff_image(a, b)).save(diff_out)
        except (OSError, ValueError) as e:
            raise MagnetError(f"cannot write the diff image {diff_out}: {e}") from e
    return result


def _pct(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{100 * value:6.2f}"


def _run_score(args: argparse.Namespace) -> int:
    import json

    if args.num_classes < 1:
        raise MagnetError(f"--num-classes must be at least 1, got {args.num_classes}")
    report = score_files(
        args.pred,
        args.label,
        num_classes=args.num_classes,
        ignore_index=args.ignore_index,
        mba_min_radius=args.mba_min_radius,
    )
    print(f"images: {report.num_images}")
    print("class   IoU %")
    for cls, iou in enumerate(report.per_class_iou):
        print(f"{cls:5d}  {_pct(iou)}")
    print(f"mIoU  {_pct(report.mean_iou)} %")
    print(f"pixel accuracy {_pct(report.pixel_accuracy)} %")
    skipped = sum(math.isnan(p["mean_boundary_accuracy"]) for p in report.per_image)
    note = f" ({skipped} image(s) without boundaries left out)" if skipped else ""
    print(f"mBA   {_pct(report.mean_boundary_accuracy)} %{note}")
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        except OSError as e:
            raise MagnetError(f"cannot write {args.json}: {e}") from e
        print(f"wrote {args.json}")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    result = compare_files(args.a, args.b, diff_out=args.diff_out)
    height, width = result.shape
    print(f"size: {width}x{height} (W x H)")
    print(
        f"agreement: {100 * result.agreement:.4f} % ({result.num_different} of {result.num_pixels} pixels differ)"
    )
    if result.bbox is not None:
        y0, x0, y1, x1 = result.bbox
        print(f"differences within rows {y0}..{y1 - 1}, columns {x0}..{x1 - 1}")
        print("most frequent (A class -> B class: pixels):")
        for cls_a, cls_b, count in result.top_pairs:
            print(f"  {cls_a} -> {cls_b}: {count}")
    if args.diff_out is not None:
        print(f"wrote {args.diff_out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score`` and ``compare`` sub-commands to the ``magnet-triton`` parser."""
    score = subparsers.add_parser(
        "score",
        help="mIoU, per-class IoU and mBA of predicted class maps against labels",
        description="Score predicted class-map PNGs against label PNGs, matched by file stem. "
        "mIoU uses the confusion matrix over all images; mBA (CascadePSP's mean boundary accuracy) is "
        "averaged over images.",
    )
    score.add_argument(
        "--pred", nargs="+", required=True, metavar="PATH", help="prediction PNGs or folders of them"
    )
    score.add_argument(
        "--label", nargs="+", required=True, metavar="PATH", help="label PNGs or folders of them"
    )
    score.add_argument(
        "--num-classes", type=int, required=True, metavar="C", help="number of classes (0..C-1)"
    )
    score.add_argument(
        "--ignore-index",
        type=int,
        default=255,
        metavar="N",
        help="label value left out of scoring (default 255)",
    )
    score.add_argument(
        "--mba-min-radius",
        type=int,
        default=1,
        metavar="R",
        help="smallest mBA band radius in pixels: 1 as in CascadePSP's code (default), 3 as in its paper",
    )
    score.add_argument(
        "--json", metavar="OUT", help="also write the results, with per-image values, to this JSON file"
    )
    score.set_defaults(func=_run_score)

    compare = subparsers.add_parser(
        "compare",
        help="how far two class maps agree, and where they differ",
        description="Compare two single-channel class-map PNGs of the same size pixel by pixel.",
    )
    compare.add_argument("a", metavar="A.png")
    compare.add_argument("b", metavar="B.png")
    compare.add_argument(
        "--diff-out", metavar="DIFF.png", help="write a picture of the differences (red) here"
    )
    compare.set_defaults(func=_run_compare)
