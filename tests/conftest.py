"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from magnet_triton.server import free_port as _free_port


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function that returns a TCP port free on 127.0.0.1 (give each test server its own ports)."""
    return _free_port
