"""The CPU target's ``magnet_backbone`` and ``magnet_refiner``: the exported ONNX files in onnxruntime.

Triton's dynamic batcher hands over several requests at once; they are concatenated into one
onnxruntime run and split again, which is where concurrent pipelines share work.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from magnet_triton.model_repository.config_params import model_parameters
from magnet_triton.model_repository.responses import error_response, internal_error

log = logging.getLogger(__name__)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import json

        import onnxruntime as ort
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        config = json.loads(args["model_config"])
        params = model_parameters(args)
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        onnx_path = os.path.join(
            args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx")
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        log.info("%s version %s: %s", args["model_name"], args["model_version"], onnx_path)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb_utils
        arrays = [pb.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        try:
            outputs = self.session.run([self.output_name], {self.input_name: np.concatenate(arrays)})[0]
        except Exception as e:  # every request of this batch failed for the same reason
            log.exception("onnxruntime failed")
            error = internal_error(pb, f"onnxruntime failed: {e}")
            return [error_response(pb, error) for _ in requests]
        responses, start = [], 0
        for array in arrays:
            stop = start + array.shape[0]
            responses.append(
                pb.InferenceResponse(output_tensors=[pb.Tensor(self.output_name, outputs[start:stop])])
            )
            start = stop
        return responses
