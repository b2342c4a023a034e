"""The pipeline's :class:`~magnet_triton.pipeline.Networks`, reached through Triton BLS calls.

Patches of a scale go out in batches of up to ``max_batch`` per request (the network models' dynamic
batchers can merge batches of concurrent pipelines). Tensors on a GPU cross over DLPack and stay there;
CPU tensors travel as numpy arrays.
"""

from __future__ import annotations

from typing import Any

import torch

from magnet_triton import io_spec
from magnet_triton.errors import MagnetError
from magnet_triton.model_repository.tensors import from_triton, to_triton


class NetworkCallError(RuntimeError):
    """A composing model failed: a server-side problem, not the caller's."""


class BLSNetworks:
    """Backbone and refiner as BLS calls to ``magnet_backbone`` and ``magnet_refiner`` (version = index + 1)."""

    def __init__(self, pb_utils: Any, *, device: torch.device, max_batch: int, timeout_ms: int = 0) -> None:
        self.pb_utils = pb_utils
        self.device = device
        self.max_batch = max_batch
        self.timeout_ms = timeout_ms
        self.calls = 0

    def _call(self, model: str, version: int, input_name: str, batch: torch.Tensor) -> torch.Tensor:
        outputs = []
        for chunk in batch.split(self.max_batch):
            request = self.pb_utils.InferenceRequest(
                model_name=model,
                model_version=version,
                requested_output_names=[io_spec.PROBABILITIES],
                inputs=[to_triton(input_name, chunk, self.pb_utils)],
                **({"timeout": self.timeout_ms * 1000} if self.timeout_ms else {}),
            )
            response = request.exec()
            self.calls += 1
            if response.has_error():
                raise NetworkCallError(f"{model} (version {version}) failed: {response.error().message()}")
            tensor = self.pb_utils.get_output_tensor_by_name(response, io_spec.PROBABILITIES)
            if tensor is None:
                raise NetworkCallError(f"{model} returned no {io_spec.PROBABILITIES}")
            outputs.append(from_triton(tensor, self.device))
        return torch.cat(outputs)

    def backbone(self, patches: torch.Tensor) -> torch.Tensor:
        """B x 3 x h x w float32 -> B x C x h x w float32 probabilities."""
        return self._call(io_spec.BACKBONE_MODEL, -1, io_spec.PATCHES, patches)

    def refiner(self, index: int, fine_and_coarse: torch.Tensor) -> torch.Tensor:
        """B x 2C x h x w float32 -> B x C x h x w float32 probabilities, refiner ``index``."""
        if index < 0:
            raise MagnetError(f"refiner index must be >= 0, got {index}")
        version = io_spec.refiner_version(index)
        return self._call(io_spec.REFINER_MODEL, version, io_spec.FINE_AND_COARSE, fine_and_coarse)
