"""``magnet_pipeline_progressive``: the pipeline as a decoupled model, one response per stage.

MagNet refines coarse to fine, so every stage has a usable map: this model streams the class map after
the coarse pass and after each refined scale, then the pipeline's own final answer, over one gRPC stream
(``MagnetClient.segment_progressive``). The algorithm, the checks, the counters and ``deadline_ms`` are
the pipeline's (:mod:`.pipeline_model`); a client that cancels the stream stops the refinement before
the next scale. Written by ``magnet-triton export --progressive``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from magnet_triton import io_spec
from magnet_triton.errors import WorkStopped
from magnet_triton.model_repository import pipeline_model
from magnet_triton.model_repository.responses import respond_to_each

log = logging.getLogger(__name__)

#: A streamed error reaches the client as text only (gRPC streams carry no status per response), so
#: the status goes in front of the message, as ``STATUS: message`` (gRPC's names).
_STATUS_NAMES = {
    "INVALID_ARG": "INVALID_ARGUMENT",
    "UNAVAILABLE": "UNAVAILABLE",
    "CANCELLED": "CANCELLED",
    "NOT_FOUND": "NOT_FOUND",
    "INTERNAL": "INTERNAL",
}


def with_status(pb_utils: Any, response: Any) -> Any:
    """``response``, its error message led by the status name when it is an error response."""
    if not response.has_error():
        return response
    error = response.error()
    names = {getattr(pb_utils.TritonError, code, None): name for code, name in _STATUS_NAMES.items()}
    name = names.get(error.code() if hasattr(error, "code") else None, "INTERNAL")
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{name}: {error.message()}", error.code()))


class TritonPythonModel(pipeline_model.TritonPythonModel):
    model_name = io_spec.PROGRESSIVE_MODEL

    def _stage_response(self, scales_done: int, class_map: np.ndarray) -> Any:
        pb = self.pb_utils
        return pb.InferenceResponse(
            output_tensors=[
                pb.Tensor(io_spec.SEGMENTATION, class_map),
                pb.Tensor(io_spec.SCALES_DONE, np.array([scales_done], np.int32)),
            ]
        )

    def execute(self, requests: list[Any]) -> None:
        pb = self.pb_utils
        senders = [request.get_response_sender() for request in requests]
        by_request = {id(request): sender for request, sender in zip(requests, senders)}

        def handle(request: Any) -> Any:
            sender = by_request[id(request)]

            def on_stage(scales_done: int, class_map: np.ndarray) -> None:
                try:
                    sender.send(self._stage_response(scales_done, class_map))
                except Exception as e:  # the stream is gone (the client cancelled): stop the work
                    raise WorkStopped(f"stopped after {scales_done} scales: the stream closed ({e})") from e

            return self._segment(request, on_stage=on_stage)

        count = self.metrics.count if self.metrics is not None else None
        finals = respond_to_each(requests, handle, pb, self.model_name, log, on_outcome=count)
        # The final answer (or the error), then the flag that closes each request's stream.
        for sender, response in zip(senders, finals):
            try:
                sender.send(with_status(pb, response))
                sender.send(flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception:  # a client that cancelled has no stream to answer on
                log.info("%s: the stream closed before the final answer", self.model_name, exc_info=True)
        return None
