"""The ``cpu/openvino`` runtime's ``magnet_backbone`` and ``magnet_refiner``: OpenVINO IR on the CPU.

One compiled model per instance, at the config's precision (``fp32``, ``bf16`` where the CPU has it,
``int8`` for a quantized backbone; :mod:`magnet_triton.openvino_engine`), with the config's threads or
the instance's share of the cores. The requests of a dynamic batch share one run
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
    what = "openvino"

    def load(self, args: dict[str, Any], params: dict[str, str]) -> None:
        from magnet_triton import openvino_engine  # imports nothing heavy until it compiles

        path = os.path.join(
            args["model_repository"], args["model_version"], params.get("openvino_file", "model.xml")
        )
        threads = instance_threads(args, params.get("threads"))
        precision = params.get("precision", "fp32")
        # A BF16 model on a CPU without BF16 fails here, so the model does not load and says why.
        self.compiled = openvino_engine.compile_model(path, precision, threads)
        self.what = f"openvino-{precision}"
        log.info(
            "%s version %s: %s, %s, %d threads",
            args["model_name"],
            args["model_version"],
            path,
            precision,
            threads,
        )

    def read(self, tensor: Any) -> np.ndarray:
        return tensor.as_numpy()

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        # Copied: the output buffer belongs to the infer request and is overwritten by the next run.
        return np.array(self.compiled(np.concatenate(inputs))[0], dtype=np.float32)

    def write(self, rows: np.ndarray) -> Any:
        return self.pb_utils.Tensor(self.output_name, np.ascontiguousarray(rows, dtype=np.float32))
