"""Reading a tritonserver's Prometheus endpoint (``/metrics``) in the server tests, and waiting on it."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable

#: ``name{label="value",...} number`` (labels optional); the text format Triton's endpoint writes.
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def read_metrics(url: str) -> Samples:
    """Every sample at ``url``: (name, frozenset of label items) -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = frozenset(_LABEL.findall(match["labels"] or ""))
            samples[(match["name"], labels)] = float(match["value"])
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    """The value of the series ``name`` with exactly ``labels``; KeyError naming it when there is none."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise KeyError(f"no series {name}{labels} on the endpoint")
    return samples[key]


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` did not happen within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.02)  # polling a condition on the server, not guessing how long the work takes
