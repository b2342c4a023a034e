"""The paper's comparison on held-out scenes: Downsample, Patching, MagNet-Fast and MagNet (its table 2).

Every method runs through the one in-process pipeline (:func:`magnet_triton.pipeline.run_magnet`) with
the same networks, writes its class maps under ``OUT/predictions/<mode>/``, and is scored by
:func:`magnet_triton.evaluate.score_files` (mIoU and per-class IoU from the summed confusion matrix, mBA
averaged over images), so nothing here computes a metric of its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from magnet_triton.errors import MagnetError
from magnet_triton.evaluate import ScoreReport
from magnet_triton.pipeline import Networks
from magnet_triton.settings import Settings

#: (row label of the table, pipeline mode), in the paper's order.
METHODS: tuple[tuple[str, str], ...] = (
    ("Downsample", "downsample"),
    ("Patching", "patching"),
    ("MagNet-Fast", "magnet-fast"),
    ("MagNet", "magnet"),
)
#: MagNet-Fast's share of points, as in both published ``-fast`` presets.
FAST_N_POINTS = 0.9
PREDICTIONS = "predictions"


def method_settings(settings: Settings) -> dict[str, Settings]:
    """Per mode, the settings it runs with: ``settings`` in that mode; MagNet-Fast with ``fast_n_patches``
    patches and :data:`FAST_N_POINTS`, as the published ``-fast`` presets derive from their full ones."""
    return {
        "downsample": settings.with_overrides(mode="downsample"),
        "patching": settings.with_overrides(mode="patching"),
        "magnet-fast": settings.with_overrides(
            mode="magnet-fast", n_patches=settings.fast_n_patches, n_points=FAST_N_POINTS
        ),
        "magnet": settings.with_overrides(mode="magnet", n_points=settings.n_points),
    }


@dataclass
class Comparison:
    """The scores of each method over the same scenes.

    Attributes:
        reports: mode -> :class:`ScoreReport` (fractions in [0, 1], NaN where nothing was scored).
        seconds_per_image: mode -> mean wall time of :func:`run_magnet` per scene.
        stems: the scenes, in order.
        predictions: the folder holding ``<mode>/<stem>.png``.
        class_names: one per class, for the tables.
    """

    reports: dict[str, ScoreReport]
    seconds_per_image: dict[str, float]
    stems: list[str]
    predictions: Path
    class_names: list[str] = field(default_factory=list)


def class_names(num_classes: int) -> list[str]:
    """Cityscapes' or DeepGlobe's names for 19 or 7 classes, else ``class N``."""
    from magnet_triton.client.palettes import CITYSCAPES_CLASSES, DEEPGLOBE_CLASSES

    for table in (CITYSCAPES_CLASSES, DEEPGLOBE_CLASSES):
        if len(table) == num_classes:
            return [name for name, _ in table]
    return [f"class {c}" for c in range(num_classes)]


def compare_methods(
    scenes: str | Path,
    settings: Settings,
    networks: Networks,
    out: str | Path,
    *,
    device: str = "cpu",
    modes: tuple[str, ...] = tuple(mode for _, mode in METHODS),
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Run each mode on every scene of ``scenes`` (``images/``, ``labels/``) and score it.

    Raises:
        MagnetError: no scenes, an unreadable image or label, or a label with classes outside
            0..C-1 and 255.
    """
    from magnet_triton.client.palettes import get_palette
    from magnet_triton.evaluate import score_files
    from magnet_triton.imageio import read_image, write_class_map
    from magnet_triton.pipeline import run_magnet
    from magnet_triton.synthetic.command import scene_pairs

    unknown = set(modes) - {mode for _, mode in METHODS}
    if unknown:
        raise MagnetError(f"unknown method(s) {sorted(unknown)}; choose from {[m for _, m in METHODS]}")
    pairs = scene_pairs(scenes)
    folder = Path(out) / PREDICTIONS
    runs = method_settings(settings)
    palette = get_palette("auto", settings.num_classes)
    seconds = dict.fromkeys(modes, 0.0)
    for stem, image_path, _ in pairs:
        image = read_image(image_path)
        for mode in modes:
            start = time.perf_counter()
            result = run_magnet(
                image, runs[mode], networks, device=device, return_coarse=False, return_confidence=False
            )
            seconds[mode] += time.perf_counter() - start
            write_class_map(folder / mode / f"{stem}.png", result.segmentation, palette)
        if progress is not None:
            progress(stem)
    labels = [label for _, _, label in pairs]
    reports = {mode: score_files([folder / mode], labels, num_classes=settings.num_classes) for mode in modes}
    return Comparison(
        reports=reports,
        seconds_per_image={mode: s / len(pairs) for mode, s in seconds.items()},
        stems=[stem for stem, _, _ in pairs],
        predictions=folder,
        class_names=class_names(settings.num_classes),
    )


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def markdown_table(comparison: Comparison) -> str:
    """The paper's table 2 as Markdown: one row per method, mIoU and mBA in percent, and time per image."""
    names = dict((mode, label) for label, mode in METHODS)
    lines = [
        "| Method | mIoU (%) | mBA (%) | pixel accuracy (%) | s / image |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, report in comparison.reports.items():
        lines.append(
            f"| {names[mode]} | {_pct(report.mean_iou)} | {_pct(report.mean_boundary_accuracy)} | "
            f"{_pct(report.pixel_accuracy)} | {comparison.seconds_per_image[mode]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def per_class_table(comparison: Comparison) -> str:
    """IoU (%) of every class (rows) for every method (columns); n/a where a class is neither labelled
    nor predicted."""
    names = dict((mode, label) for label, mode in METHODS)
    modes = list(comparison.reports)
    lines = [
        "| class | " + " | ".join(names[m] for m in modes) + " |",
        "|---|" + "---:|" * len(modes),
    ]
    for c, name in enumerate(comparison.class_names):
        cells = [_pct(comparison.reports[m].per_class_iou[c]) for m in modes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
