"""Reading the ``parameters`` of a model's ``config.pbtxt`` inside a Python-backend model."""

from __future__ import annotations

import json
import os
from typing import Any


def model_parameters(args: dict[str, Any]) -> dict[str, str]:
    """``parameters { key: ... value { string_value: ... } }`` of the model config, as a plain dict."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def instance_device(args: dict[str, Any]) -> str:
    """``cuda:N`` for a GPU instance, else ``cpu``."""
    if args.get("model_instance_kind") == "GPU":
        return f"cuda:{int(args.get('model_instance_device_id', 0))}"
    return "cpu"


def instance_threads(args: dict[str, Any], configured: str | None) -> int:
    """Threads for one instance's network runs: ``configured`` when > 0, else the cores this process may
    use divided among the model's instances (each instance is its own process, and they run at once)."""
    if configured and int(configured) > 0:
        return int(configured)
    groups = json.loads(args["model_config"]).get("instance_group", [])
    instances = sum(int(g.get("count", 1)) for g in groups) or 1
    return max(1, len(os.sched_getaffinity(0)) // instances)
