"""What the Python-backend network runners share: one run per batch of requests, rows split back.

Triton's dynamic batcher hands ``execute`` several requests at once, each a B_i x ... batch of patches.
They are concatenated into one run of the network (which is where concurrent pipelines share work) and
the output rows go back to their requests. A failure of that one run fails every request of the batch
with the same INTERNAL error; the server goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from magnet_triton.model_repository.config_params import model_parameters
from magnet_triton.model_repository.responses import error_response, internal_error

log = logging.getLogger(__name__)


class BatchedNetworkModel:
    """Base of ``TritonPythonModel`` for a network: subclasses load it, read inputs, run, write outputs.

    Attributes set here: ``pb_utils``, ``input_name``, ``output_name`` (from the config, one each).
    """

    #: Names the runtime in error messages ("onnxruntime failed: ...").
    what = "the network"

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.load(args, model_parameters(args))

    def load(self, args: dict[str, Any], params: dict[str, str]) -> None:
        """Load the network of this instance (``args`` as Triton gives them, ``params`` of the config)."""
        raise NotImplementedError

    def read(self, tensor: Any) -> Any:
        """One request's input ``pb_utils.Tensor`` -> what :meth:`run` takes (B_i rows)."""
        raise NotImplementedError

    def run(self, inputs: Sequence[Any]) -> Any:
        """Every request's input -> one output whose rows follow the inputs' rows, in order."""
        raise NotImplementedError

    def write(self, rows: Any) -> Any:
        """Some rows of :meth:`run`'s output -> the output ``pb_utils.Tensor``."""
        raise NotImplementedError

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb_utils
        inputs = [self.read(pb.get_input_tensor_by_name(r, self.input_name)) for r in requests]
        try:
            outputs = self.run(inputs)
        except Exception as e:  # every request of this batch failed for the same reason
            log.exception("%s failed", self.what)
            error = internal_error(pb, f"{self.what} failed: {type(e).__name__}: {e}")
            return [error_response(pb, error) for _ in requests]
        responses, start = [], 0
        for batch in inputs:
            stop = start + batch.shape[0]
            responses.append(pb.InferenceResponse(output_tensors=[self.write(outputs[start:stop])]))
            start = stop
        return responses
