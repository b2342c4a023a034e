"""The ``cpu/onnxruntime`` runtime's ``magnet_backbone`` and ``magnet_refiner``: the exported ONNX files.

One onnxruntime session per instance; the requests of a dynamic batch share one run
(:class:`~magnet_triton.model_repository.network_runner.BatchedNetworkModel`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from magnet_triton.model_repository.config_params import instance_threads
from magnet_triton.model_repository.network_runner import BatchedNetworkModel

log = logging.getLogger(__name__)


class TritonPythonModel(BatchedNetworkModel):
    what = "onnxruntime"

    def load(self, args: dict[str, Any], params: dict[str, str]) -> None:
        import onnxruntime as ort

        onnx_path = os.path.join(
            args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx")
        )
        options = ort.SessionOptions()
        # 0: this instance's share of the cores, not onnxruntime's "all of them" (instances would fight).
        options.intra_op_num_threads = instance_threads(args, params.get("intra_op_threads"))
        options.inter_op_num_threads = 1
        # Spinning threads keep the cores busy between runs, while the pipeline needs them for its steps.
        spinning = "1" if params.get("allow_spinning", "false").lower() == "true" else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        # Memory patterns (onnxruntime plans one block per input shape, and the dynamic batcher makes
        # many shapes) cost memory and time here: measured on the cityscapes-fast backbone, batches of
        # 1 to 8, 2 threads, off: 580-656 ms per patch and 4.5 GB instead of 741-764 ms and 8.3 GB.
        options.enable_mem_pattern = False
        # The arena keeps every block it grew (by doubling) for the life of the session; without it,
        # tensors go back to the allocator after each run (0.35 GB kept instead of 4.5, about 30 % slower).
        options.enable_cpu_mem_arena = params.get("memory_arena", "true").lower() == "true"
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        log.info("%s version %s: %s", args["model_name"], args["model_version"], onnx_path)

    def read(self, tensor: Any) -> np.ndarray:
        return tensor.as_numpy()

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.concatenate(inputs)})[0]

    def write(self, rows: np.ndarray) -> Any:
        return self.pb_utils.Tensor(self.output_name, rows)
