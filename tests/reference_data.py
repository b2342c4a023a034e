"""Where the reference data lives.

``tests/reference/`` ships with the repository: the small reference files (or the parts of them) that the
operator and network tests need, so those tests run in any clone. The full files sit in ``../shared``
beside the team's checkout only; what reads them alone (the MagNet-sized operator cases, and the check
that the shipped parts equal the full files) skips with a reason when it is absent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

#: Shipped with the repository; see ``tests/reference/README.md`` for where each file came from.
SHIPPED = Path(__file__).resolve().parent / "reference"
SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"
DATA = SHARED / "data"


def shipped_file(name: str) -> Path:
    """A reference file of ``tests/reference``; always present in a clone."""
    path = SHIPPED / name
    assert path.is_file(), f"{path} is missing: it is part of the repository (see tests/reference/trim.py)"
    return path


def shared_file(*parts: str) -> Path:
    """A file under ``../shared`` beside the checkout, or skip: a user's clone has no ``../shared``."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared reference data sits beside the team's checkout only")
    return path


def formula_weights(state_dict_shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """The reference's seeded weights (``shared/reference/README.md``): one generator seeded 0, the keys in
    sorted order, each drawn by its kind; float32."""
    generator = torch.Generator().manual_seed(0)
    weights = {}
    for key in sorted(state_dict_shapes):
        shape = state_dict_shapes[key]
        if key.endswith("num_batches_tracked"):
            weights[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        if key.endswith("running_var"):
            value = torch.rand(shape, generator=generator) * 1.5 + 0.5
        elif key.endswith("running_mean"):
            value = torch.randn(shape, generator=generator) * 0.1
        elif len(shape) == 1 and key.endswith(".weight"):
            value = torch.rand(shape, generator=generator) * 0.5 + 0.75
        elif len(shape) == 1 and key.endswith(".bias"):
            value = torch.randn(shape, generator=generator) * 0.05
        else:
            value = torch.randn(shape, generator=generator) * (1 / math.prod(shape[1:])) ** 0.5
        weights[key] = value.float()
    return weights


@dataclass(frozen=True)
class NetworkCase:
    """One network of ``tests/reference/network_outputs.npz``.

    Attributes:
        input: 1 x Cin x H x W float32 (for the refiner, fine then coarse probabilities, 2C channels).
        rows, cols: int64 indices of the output rows and columns the reference logits were kept at.
        logits: 1 x C x len(rows) x len(cols) float64, the authors' network in float64.
    """

    input: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    logits: np.ndarray

    def at_kept_pixels(self, output: np.ndarray) -> np.ndarray:
        """B x C x H x W -> B x C x len(rows) x len(cols): ``output`` where the reference is known."""
        return output[:, :, self.rows][:, :, :, self.cols]


def network_case(name: str) -> NetworkCase:
    with np.load(shipped_file("network_outputs.npz")) as cases:
        if name == "refinement":
            x = np.concatenate([cases[f"{name}/fine"], cases[f"{name}/coarse"]], axis=1)
        else:
            x = cases[f"{name}/input"]
        return NetworkCase(x, cases[f"{name}/rows"], cases[f"{name}/cols"], cases[f"{name}/logits"])


def official_layouts() -> dict[str, dict[str, Any]]:
    """Per network: ``num_classes``, ``parameters`` and ``state_dict`` (key -> shape) of the authors'."""
    return json.loads(shipped_file("official_state_dict.json").read_text())["models"]
