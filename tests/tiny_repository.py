"""A small CPU model repository with seeded random weights, for the server tests.

The published presets need minutes per image on two cores, so the server tier uses a custom preset of
the same shape (three scales, two refiners, FPN backbone) at 64 x 64 patches.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from magnet_triton.settings import Settings

SEED = 7

TINY = Settings(
    name="tiny",
    scales=((64, 64), (128, 128), (256, 256)),
    crop_size=(64, 64),
    input_size=(64, 64),
    num_classes=5,
    backbone="fpn",
    n_refiners=2,
    n_points=0.25,
    smooth_kernel=3,
    fast_n_patches=2,
)
#: Street scenes at tiny sizes for the training and evaluation tests: the 19 Cityscapes classes and the
#: authors' HRNet backbone, as the cityscapes presets, at 128 x 64.
TINY_STREET = Settings(
    name="tiny",
    scales=((32, 16), (64, 32), (128, 64)),
    crop_size=(32, 16),
    input_size=(32, 16),
    num_classes=19,
    backbone="hrnet18+ocr",
    n_refiners=2,
    n_points=0.5,
)


def build_tiny_repository(
    root: Path,
    *,
    max_image_pixels: int = 600 * 600,
    max_batch: int = 4,
    engine: str | None = None,
    precision: str = "fp32",
    pipeline_instances: int = 2,
    max_queue_size: int | None = None,
    queue_timeout_ms: int = 0,
    progressive: bool = False,
) -> Path:
    """Export :data:`TINY` with random weights (seed :data:`SEED`) and write its repository under ``root``.

    ``engine``: the CPU runtime (default onnxruntime; ``torch`` serves the PyTorch networks, ``openvino``
    OpenVINO IR at ``precision``). The rest are the :class:`RepositoryOptions` of the same names.
    """
    from magnet_triton.export.build import export_repository
    from magnet_triton.export.repository import RepositoryOptions

    options = RepositoryOptions(
        engine=engine,
        max_batch=max_batch,
        max_image_pixels=max_image_pixels,
        pipeline_instances=pipeline_instances,
        precision=precision,
        max_queue_size=max_queue_size,
        queue_timeout_ms=queue_timeout_ms,
        progressive=progressive,
    )
    return export_repository(TINY, root / "repository", random_seed=SEED, options=options)


def skip_without_tritonserver() -> None:
    """Skip the calling test (or fixture) with the reason when no tritonserver can be found here."""
    import pytest

    from magnet_triton.errors import MagnetError
    from magnet_triton.server import find_tritonserver

    try:
        find_tritonserver()
    except MagnetError as e:
        pytest.skip(f"no tritonserver here: {e}")


@contextmanager
def serving_tiny_repository(root: Path, **options: Any) -> Iterator[Any]:
    """A running ``TritonServer`` on a new tiny repository under ``root`` (see :func:`build_tiny_repository`)."""
    from magnet_triton.server import TritonServer

    skip_without_tritonserver()
    repository = build_tiny_repository(root, **options)
    with TritonServer(repository, log_path=repository.parent / "server.log") as running:
        yield running


def scene(height: int = 150, width: int = 230, seed: int = 0) -> np.ndarray:
    """A blocky random H x W x 3 uint8 image: blocks give the tiny model boundaries to segment."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(-(-height // 16), -(-width // 16), 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(blocks, np.ones((16, 16, 1), dtype=np.uint8))[:height, :width])


def png_bytes(image: np.ndarray) -> bytes:
    """``image`` encoded as PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
