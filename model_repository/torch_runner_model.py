"""``magnet_backbone`` / ``magnet_refiner`` of the ``torch`` runtimes: our PyTorch networks in Triton.

Each version folder holds one network file (:func:`magnet_triton.torch_engine.save_network_file`). The
instance runs it on its own device (``KIND_GPU`` instances on their GPU, ``KIND_CPU`` on the CPU) with
the precision and CUDA-graph setting of the config. The requests of a dynamic batch share one run
(:class:`~magnet_triton.model_repository.network_runner.BatchedNetworkModel`); GPU tensors come and go by
DLPack without a copy to the host.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from magnet_triton.model_repository.network_runner import BatchedNetworkModel

log = logging.getLogger(__name__)


class TritonPythonModel(BatchedNetworkModel):
    def load(self, args: dict[str, Any], params: dict[str, str]) -> None:
        import torch

        from magnet_triton.model_repository.config_params import instance_device
        from magnet_triton.torch_engine import TorchEngine

        device = torch.device(instance_device(args))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(int(params.get("threads", "0")) or len(os.sched_getaffinity(0)))
        path = os.path.join(
            args["model_repository"], args["model_version"], params.get("weights_file", "model.pt")
        )
        self.engine = TorchEngine.from_file(
            path,
            device=device,
            precision=params.get("precision", "fp32"),
            cuda_graphs=params.get("cuda_graphs", "false").lower() == "true",
        )
        self.what = self.engine.name
        log.info(
            "%s version %s: %s on %s, %s%s",
            args["model_name"],
            args["model_version"],
            self.engine.name,
            device,
            self.engine.precision,
            ", CUDA graphs" if self.engine.cuda_graphs else "",
        )

    def read(self, tensor: Any) -> Any:
        from magnet_triton.model_repository.tensors import from_triton

        return from_triton(tensor, self.engine.device)

    def run(self, inputs: Sequence[Any]) -> Any:
        import torch

        return self.engine(torch.cat(list(inputs)))

    def write(self, rows: Any) -> Any:
        from magnet_triton.model_repository.tensors import to_triton

        return to_triton(self.output_name, rows, self.pb_utils)
