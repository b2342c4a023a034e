"""The pipeline's :class:`~magnet_triton.pipeline.Networks`, reached through Triton BLS calls.

Patches of a scale go out in batches of up to ``max_batch`` per request, all of a scale's batches at
once (``async_exec``), so the network models' instances and dynamic batchers work on them together, and
merge them with the batches of concurrent pipelines, instead of one round trip after another. Tensors on a GPU cross over DLPack and stay there;
CPU tensors travel as numpy arrays.
"""

from __future__ import annotations

import asyncio
from typing import Any

import torch

from magnet_triton import io_spec
from magnet_triton.errors import ServiceUnavailable
from magnet_triton.model_repository.tensors import from_triton, to_triton


class NetworkCallError(RuntimeError):
    """A composing model failed: a server-side problem, not the caller's."""


class NetworkUnavailable(NetworkCallError, ServiceUnavailable):
    """A composing model is down (its stub process died, or it is not loaded): retry later."""


#: How Triton words a call to a model that is down: a dead stub (24.10 gives it no status code of its
#: own), and a model unloaded or reloading.
_DOWN = ("is not healthy", "is not ready", "unknown model", "not found")


def _is_down(error: Any) -> bool:
    # TritonError has codes from 23.09 on; before, only the words tell.
    unavailable = getattr(error, "UNAVAILABLE", None)
    if unavailable is not None and hasattr(error, "code") and error.code() == unavailable:
        return True
    return any(words in error.message() for words in _DOWN)


async def _exec_all(requests: list[Any]) -> list[Any]:
    # async_exec needs a running loop when it is called, not only when it is awaited.
    return list(await asyncio.gather(*(r.async_exec() for r in requests)))


class BLSNetworks:
    """Backbone and refiners as BLS calls to their models (``names.backbone``, ``names.refiner(i)``).

    ``version``: the network version every call asks for; -1 lets Triton pick the newest version it has
    loaded (the networks' configs load every version folder), a number pins that version.
    """

    def __init__(
        self,
        pb_utils: Any,
        *,
        device: torch.device,
        max_batch: int,
        timeout_ms: int = 0,
        names: io_spec.ModelNames = io_spec.DEFAULT_NAMES,
        version: int = -1,
    ) -> None:
        self.pb_utils = pb_utils
        self.device = device
        self.max_batch = max_batch
        self.timeout_ms = timeout_ms
        self.names = names
        self.version = version
        self.calls = 0
        self._event_loop: asyncio.AbstractEventLoop | None = None

    def _request(self, model: str, version: int, input_name: str, chunk: torch.Tensor) -> Any:
        return self.pb_utils.InferenceRequest(
            model_name=model,
            model_version=version,
            requested_output_names=[io_spec.PROBABILITIES],
            inputs=[to_triton(input_name, chunk, self.pb_utils)],
            **({"timeout": self.timeout_ms * 1000} if self.timeout_ms else {}),
        )

    def _output(self, model: str, version: int, response: Any) -> torch.Tensor:
        self.calls += 1
        if response.has_error():
            error = response.error()
            kind = NetworkUnavailable if _is_down(error) else NetworkCallError
            which = "newest version" if version < 0 else f"version {version}"
            raise kind(f"{model} ({which}) failed: {error.message()}")
        tensor = self.pb_utils.get_output_tensor_by_name(response, io_spec.PROBABILITIES)
        if tensor is None:
            raise NetworkCallError(f"{model} returned no {io_spec.PROBABILITIES}")
        return from_triton(tensor, self.device)

    def _call(self, model: str, version: int, input_name: str, batch: torch.Tensor) -> torch.Tensor:
        requests = [self._request(model, version, input_name, c) for c in batch.split(self.max_batch)]
        if len(requests) > 1 and hasattr(requests[0], "async_exec"):
            # Every chunk of the scale in flight at once: the network model's dynamic batcher and its
            # instances work on them together instead of one round trip after another.
            responses = self._loop.run_until_complete(_exec_all(requests))
        else:
            responses = [r.exec() for r in requests]
        return torch.cat([self._output(model, version, r) for r in responses])

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        # A loop of this instance's own: execute() is synchronous, and the stub runs no loop for it.
        if self._event_loop is None:
            self._event_loop = asyncio.new_event_loop()
        return self._event_loop

    def backbone(self, patches: torch.Tensor) -> torch.Tensor:
        """B x 3 x h x w float32 -> B x C x h x w float32 probabilities."""
        return self._call(self.names.backbone, self.version, io_spec.PATCHES, patches)

    def refiner(self, index: int, fine_and_coarse: torch.Tensor) -> torch.Tensor:
        """B x 2C x h x w float32 -> B x C x h x w float32 probabilities, refiner ``index``."""
        model = self.names.refiner(index)  # a negative index fails here
        return self._call(model, self.version, io_spec.FINE_AND_COARSE, fine_and_coarse)
