"""Segmentation metrics on class maps: confusion matrix, IoU, mean boundary accuracy, map comparison.

Pure numpy (no torch, no OpenCV), so the client install can score results. Class maps are integer
arrays of class indices (H x W, any integer dtype); ``ignore_index`` marks unlabelled pixels in a
ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from magnet_triton.errors import MagnetError

__all__ = [
    "MapComparison",
    "boundary_band",
    "boundary_radii",
    "compare_maps",
    "confusion_matrix",
    "diff_image",
    "disk_half_widths",
    "iou_per_class",
    "mean_boundary_accuracy",
    "mean_iou",
]


def _check_pair(pred: np.ndarray, label: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Return both maps as arrays after checking they are integer class maps of one shape."""
    pred, label = np.asarray(pred), np.asarray(label)
    for name, arr in zip(names, (pred, label)):
        # bool is not a class map: a mask passed by mistake would silently score as classes 0/1.
        if not np.issubdtype(arr.dtype, np.integer):
            raise MagnetError(
                f"{name} must hold integer class indices, got dtype {arr.dtype}; "
                "convert probabilities with argmax and masks with astype(np.uint8) first"
            )
    if pred.shape != label.shape:
        raise MagnetError(
            f"{names[0]} and {names[1]} differ in shape: {pred.shape} vs {label.shape}; "
            "resize the prediction to the label's size (nearest neighbour) before scoring"
        )
    return pred, label


def confusion_matrix(
    pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """Count pixels per (label class, predicted class).

    Args:
        pred: predicted class indices, any shape, integer dtype.
        label: ground-truth class indices, same shape as ``pred``, integer dtype.
        num_classes: C; valid classes are 0 .. C-1.
        ignore_index: label value of pixels left out of the count (their prediction is not checked).

    Returns:
        C x C int64 matrix; entry [i, j] counts pixels labelled i and predicted j (rows = label).

    Raises:
        MagnetError: shapes differ, a dtype is not integer, or a value lies outside 0 .. C-1
            (``ignore_index`` excepted in the label).
    """
    pred, label = _check_pair(pred, label, ("pred", "label"))
    if num_classes < 1:
        raise MagnetError(f"num_classes must be at least 1, got {num_classes}")
    keep = label != ignore_index
    lab = label[keep].astype(np.int64)
    prd = pred[keep].astype(np.int64)
    for name, values in (("label", lab), ("pred", prd)):
        bad = (values < 0) | (values >= num_classes)
        if bad.any():
            found = np.unique(values[bad])[:8].tolist()
            raise MagnetError(
                f"{name} has class values {found} outside 0..{num_classes - 1} "
                f"(ignore_index={ignore_index}); check --num-classes and the ignore index"
            )
    counts = np.bincount(lab * num_classes + prd, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _check_conf(conf: np.ndarray) -> np.ndarray:
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise MagnetError(f"a confusion matrix must be square C x C, got shape {conf.shape}")
    return conf


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """Intersection over union of each class from a confusion matrix (rows = label, cols = pred).

    Returns:
        C float64 values, TP / (TP + FP + FN); NaN for a class that is neither labelled nor predicted.
    """
    conf = _check_conf(conf).astype(np.float64)
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    iou = np.full(conf.shape[0], np.nan)
    present = union > 0
    iou[present] = tp[present] / union[present]
    return iou


def mean_iou(conf: np.ndarray) -> float:
    """Mean of :func:`iou_per_class` over classes that occur (NaN ignored); NaN if none occurs."""
    iou = iou_per_class(conf)
    # np.nanmean warns on all-NaN input; an empty matrix is a legitimate "nothing scored".
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan


# --- mean boundary accuracy (mBA) ---------------------------------------------------------------


def disk_half_widths(radius: int) -> np.ndarray:
    """Half-width of each row of the disk structuring element of ``radius``, for dy = -r .. r.

    Row dy spans dx in [-w, w] with w = round(sqrt(r^2 - dy^2)): the shape of OpenCV's
    ``getStructuringElement(MORPH_ELLIPSE, (2r+1, 2r+1))``, which CascadePSP uses. (The square root of
    an integer is never within float error of .5, so the rounding mode does not matter.)
    """
    if radius < 0:
        raise MagnetError(f"a disk radius must be >= 0, got {radius}")
    dy = np.arange(-radius, radius + 1)
    return np.rint(np.sqrt(radius * radius - dy * dy)).astype(np.int64)


def _disk_filter(labels: np.ndarray, radius: int, reduce: np.ufunc) -> np.ndarray:
    """Max or min of ``labels`` over the disk around each pixel, ignoring pixels outside the image.

    Separable by rows: ``rows[k]`` is the 1-D filter of half-width k (grown one pixel at a time), and
    each disk row dy takes ``rows[w(dy)]`` shifted by dy. That is O(r) whole-array operations instead of
    the O(r^2) of one shift per disk offset.
    """
    # Half-widths past the image width add nothing: cap them so huge radii stay cheap.
    widths = np.minimum(disk_half_widths(radius), max(labels.shape[1] - 1, 0))
    rows = [labels]
    for _ in range(int(widths.max())):
        prev = rows[-1]
        cur = prev.copy()
        reduce(cur[:, 1:], prev[:, :-1], out=cur[:, 1:])
        reduce(cur[:, :-1], prev[:, 1:], out=cur[:, :-1])
        rows.append(cur)
    out = rows[widths[radius]].copy()
    for dy in range(1, min(radius, labels.shape[0] - 1) + 1):
        src = rows[widths[radius + dy]]
        reduce(out[:-dy], src[dy:], out=out[:-dy])
        reduce(out[dy:], src[:-dy], out=out[dy:])
    return out


def boundary_band(label: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` of a class boundary of ``label``: the band that mBA scores.

    A pixel p is in the band when the disk of ``radius`` around p (see :func:`disk_half_widths`),
    clipped to the image, holds at least two different label values, i.e. some pixel of another
    value lies within the disk around p. This is OpenCV's morphological gradient (dilation minus
    erosion, border ignored) being non-zero, as in CascadePSP. Both sides of an edge are included, so a
    straight edge gives a band 2 * radius pixels wide. An ignore label counts as one more value here.

    Args:
        label: H x W integer class map.
        radius: disk radius in pixels, >= 1.

    Returns:
        H x W bool.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise MagnetError(f"a class map must be 2-D (H x W), got shape {label.shape}")
    if radius < 1:
        raise MagnetError(f"a boundary radius must be >= 1, got {radius}")
    return _disk_filter(label, radius, np.maximum) != _disk_filter(label, radius, np.minimum)


def boundary_radii(height: int, width: int, *, num_steps: int = 5, min_radius: int = 1) -> list[int]:
    """Band radii that mBA averages over, from the image size.

    ``r_i = min_radius + int((max_radius - min_radius) / num_steps * i)`` for i = 0 .. num_steps-1 with
    ``max_radius = (width + height) / 300``: the formula of CascadePSP's released evaluation code
    (``util/compute_boundary_acc.py``), ``int`` truncating toward zero and the top radius never reached.
    That code uses ``min_radius = 1``; the paper's text says the radii span 3 .. (w+h)/300, so pass
    ``min_radius=3`` for that reading. Radii are at least 1 (small images get all-1 radii).
    """
    if height < 1 or width < 1:
        raise MagnetError(f"image size must be positive, got {height} x {width}")
    if num_steps < 1 or min_radius < 1:
        raise MagnetError(f"need num_steps >= 1 and min_radius >= 1, got {num_steps} and {min_radius}")
    max_radius = (width + height) / 300
    return [max(1, min_radius + int((max_radius - min_radius) / num_steps * i)) for i in range(num_steps)]


def mean_boundary_accuracy(
    pred: np.ndarray,
    label: np.ndarray,
    *,
    ignore_index: int | None = 255,
    num_steps: int = 5,
    min_radius: int = 1,
    radii: Sequence[int] | None = None,
) -> float:
    """Mean boundary accuracy (mBA) of one prediction, after CascadePSP (Cheng et al., CVPR 2020).

    For each radius r of :func:`boundary_radii` (5 radii from the image size), take the band of
    :func:`boundary_band` around the boundaries of the GROUND TRUTH and compute the pixel accuracy of
    ``pred`` there: the share of band pixels with ``pred == label``, leaving out pixels labelled
    ``ignore_index`` (ignored pixels still form boundaries with their neighbours, as the void class does
    in CascadePSP's multi-class code). mBA is the mean of these accuracies over the radii. A dataset's
    mBA is the mean of the per-image values.

    This matches ``compute_boundary_acc_multi_class`` of CascadePSP for a label whose void class is
    ``ignore_index``, except that a void pixel in the band is dropped from the count instead of being
    subtracted from the correct pixels (the two agree when the prediction is void there too).

    Args:
        pred: H x W integer class map.
        label: H x W integer ground truth.
        ignore_index: label value left out of the score; None keeps every pixel.
        num_steps, min_radius: see :func:`boundary_radii`.
        radii: band radii in pixels to use instead of those from the image size.

    Returns:
        mBA in [0, 1]; NaN when no radius has a scored band pixel (a label with a single class).
    """
    pred, label = _check_pair(pred, label, ("pred", "label"))
    if label.ndim != 2:
        raise MagnetError(f"mBA needs 2-D (H x W) class maps, got shape {label.shape}")
    scored = label != ignore_index if ignore_index is not None else np.ones(label.shape, bool)
    correct = (pred == label) & scored
    accuracies = []
    if radii is None:
        radii = boundary_radii(*label.shape, num_steps=num_steps, min_radius=min_radius)
    for radius in radii:
        band = boundary_band(label, radius)
        total = np.count_nonzero(band & scored)
        if total:
            accuracies.append(np.count_nonzero(band & correct) / total)
    # CascadePSP divides by zero (NaN) for an image without boundaries; say so explicitly instead.
    return float(np.mean(accuracies)) if accuracies else math.nan


# --- comparing two maps -------------------------------------------------------------------------


@dataclass(frozen=True)
class MapComparison:
    """Where two class maps agree and differ.

    Attributes:
        shape: (H, W) of both maps.
        num_pixels: H * W.
        num_different: pixels whose values differ.
        agreement: share of equal pixels, in [0, 1] (1.0 for empty maps).
        bbox: (y0, x0, y1, x1) of the differences, ends exclusive; None when the maps are equal.
        top_pairs: up to ``top_k`` (value in a, value in b, pixel count) of differing pixels, most
            frequent first (ties by value).
        diff_mask: H x W bool, True where they differ; only with ``with_mask=True``.
    """

    shape: tuple[int, ...]
    num_pixels: int
    num_different: int
    agreement: float
    bbox: tuple[int, int, int, int] | None
    top_pairs: tuple[tuple[int, int, int], ...]
    diff_mask: np.ndarray | None = None

    @property
    def identical(self) -> bool:
        return self.num_different == 0


def compare_maps(a: np.ndarray, b: np.ndarray, *, top_k: int = 5, with_mask: bool = False) -> MapComparison:
    """Compare two H x W integer class maps (e.g. the server's output against the in-process pipeline)."""
    a, b = _check_pair(a, b, ("first map", "second map"))
    if a.ndim != 2:
        raise MagnetError(f"compare_maps needs 2-D (H x W) class maps, got shape {a.shape}")
    diff = a != b
    num_pixels = int(a.size)
    num_different = int(np.count_nonzero(diff))
    bbox = None
    pairs: tuple[tuple[int, int, int], ...] = ()
    if num_different:
        rows = np.flatnonzero(diff.any(axis=1))
        cols = np.flatnonzero(diff.any(axis=0))
        bbox = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
        found, counts = np.unique(
            np.stack([a[diff], b[diff]], axis=1).astype(np.int64), axis=0, return_counts=True
        )
        # Stable sort on -count keeps np.unique's (a, b) order among ties.
        order = np.argsort(-counts, kind="stable")[:top_k]
        pairs = tuple((int(found[i, 0]), int(found[i, 1]), int(counts[i])) for i in order)
    return MapComparison(
        shape=tuple(a.shape),
        num_pixels=num_pixels,
        num_different=num_different,
        agreement=1.0 - num_different / num_pixels if num_pixels else 1.0,
        bbox=bbox,
        top_pairs=pairs,
        diff_mask=diff if with_mask else None,
    )


def diff_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A picture of where two class maps differ: H x W x 3 uint8 RGB.

    Differing pixels are red; agreeing ones are grey, a shade per class, so the layout of the scene
    stays visible around the differences.
    """
    a, b = _check_pair(a, b, ("first map", "second map"))
    if a.ndim != 2:
        raise MagnetError(f"diff_image needs 2-D (H x W) class maps, got shape {a.shape}")
    # Shades 40..152, dark enough that red stands out; 37 spreads neighbouring class ids apart.
    grey = (40 + (a.astype(np.int64) * 37) % 113).astype(np.uint8)
    out = np.repeat(grey[:, :, None], 3, axis=2)
    out[a != b] = (255, 0, 0)
    return out
