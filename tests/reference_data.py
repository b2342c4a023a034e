"""Where the shared reference data lives, and a skip with a reason when a clone has none."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"
DATA = SHARED / "data"


def shared_file(*parts: str) -> Path:
    """A file under ``../shared`` beside the checkout, or skip: a user's clone has no ``../shared``."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared reference data sits beside the team's checkout only")
    return path
