"""Reading the ``parameters`` of a model's ``config.pbtxt`` inside a Python-backend model."""

from __future__ import annotations

import json
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
