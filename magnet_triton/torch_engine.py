"""The ``torch`` engine: one of our PyTorch networks serving probabilities, on a CPU or a GPU.

It is what the ``cpu/torch`` and ``gpu/torch`` runtimes serve (GPUs without TensorRT are a real
deployment, and it lets every test of the GPU path run where TensorRT cannot be installed). A network
file (:func:`save_network_file`) holds the registry name, the class count and the state dict;
:class:`TorchEngine` rebuilds the network from the registry and runs it:

- FP32, or FP16 under autocast with the registry's ``fp32_modules`` kept in FP32 and the final softmax
  always in FP32;
- channels-last memory layout on a GPU, where convolutions are faster in it;
- optionally one CUDA graph per batch size, replayed for every later batch of that size (the networks
  launch hundreds of small kernels per patch; a graph launches them as one).

torch is imported here at the top: only the runner and the tests import this module.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import torch
from torch import nn

from magnet_triton.errors import MagnetError
from magnet_triton.networks.registry import network_entry

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")
_FORMAT = "magnet_triton.torch_network/1"


def save_network_file(path: str | os.PathLike[str], name: str, num_classes: int, model: nn.Module) -> None:
    """Write network ``name`` (C = ``num_classes``) with ``model``'s weights as one engine file."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(
        {"format": _FORMAT, "network": name, "num_classes": int(num_classes), "state_dict": state}, path
    )


def load_network_file(path: str | os.PathLike[str]) -> tuple[str, int, nn.Module]:
    """(registry name, class count, the network in eval mode with its weights) from an engine file.

    Raises:
        MagnetError: the file is missing, unreadable, of another format, or does not fit its network.
    """
    from magnet_triton.networks.checkpoint import apply_state_dict, read_checkpoint

    data = read_checkpoint(path)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise MagnetError(
            f"{path} is not a network file of the torch engine (written by magnet-triton export)"
        )
    name, num_classes = str(data["network"]), int(data["num_classes"])
    model = network_entry(name).build(num_classes)
    apply_state_dict(model, data["state_dict"], source=str(path))
    return name, num_classes, model.eval()


def _keep_in_fp32(module: nn.Module) -> None:
    """Run ``module`` in FP32 inside an FP16 autocast region: its inputs are cast up, autocast is off."""
    forward = module.forward

    def fp32_forward(*args: Any, **kwargs: Any) -> Any:
        def up(value: Any) -> Any:
            return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value

        with torch.autocast(device_type=_autocast_device(args), enabled=False):
            return forward(*(up(a) for a in args), **{k: up(v) for k, v in kwargs.items()})

    module.forward = fp32_forward  # type: ignore[method-assign]


def _autocast_device(args: tuple[Any, ...]) -> str:
    for value in args:
        if isinstance(value, torch.Tensor):
            return value.device.type
    return "cuda"


class TorchEngine:
    """A network as a function: B x Cin x h x w float32 -> B x C x h x w float32 probabilities.

    Args:
        model: the network in eval mode (from :func:`load_network_file`).
        name: its registry name (for the FP32-pinned modules).
        device: where it runs.
        precision: ``fp32`` or ``fp16`` (autocast; needs a CUDA device).
        cuda_graphs: capture one CUDA graph per batch size on first use (CUDA devices only).
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        *,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        cuda_graphs: bool = False,
    ) -> None:
        self.device = torch.device(device)
        if precision not in PRECISIONS:
            raise MagnetError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise MagnetError("fp16 needs a CUDA device: the CPU engines run in fp32")
        if cuda_graphs and self.device.type != "cuda":
            raise MagnetError("CUDA graphs need a CUDA device; turn them off for a CPU engine")
        self.name = name
        self.precision = precision
        self.cuda_graphs = cuda_graphs
        self.channels_last = self.device.type == "cuda"
        model = model.eval().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if precision == "fp16":
            patterns = [re.compile(p) for p in network_entry(name).fp32_modules]
            pinned = [n for n, m in model.named_modules() if n and any(p.search(n) for p in patterns)]
            for module_name in pinned:
                _keep_in_fp32(model.get_submodule(module_name))
            log.info("%s: fp16 with %d module(s) kept in fp32: %s", name, len(pinned), pinned)
        self.model = model
        self._graphs: dict[tuple[int, ...], tuple[Any, torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> TorchEngine:
        """The engine of a network file (:func:`save_network_file`)."""
        name, _, model = load_network_file(path)
        return cls(model, name, **kwargs)

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            device_type=self.device.type, dtype=torch.float16, enabled=self.precision == "fp16"
        ):
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """B x Cin x h x w float32 (any device) -> B x C x h x w float32 probabilities on :attr:`device`."""
        if batch.dim() != 4 or not batch.is_floating_point():
            raise MagnetError(f"expected B x C x h x w floats, got {batch.dtype} {tuple(batch.shape)}")
        x = batch.to(self.device, torch.float32, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.cuda_graphs:
            return self._probabilities(x).contiguous()
        return self._replay(x)

    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        # The output buffer is reused by the next replay: hand out a copy.
        return static_out.clone()

    def _capture(self, x: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
        static_in = x.clone()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm up outside the graph (cuDNN picks its algorithms here)
            for _ in range(2):
                self._probabilities(static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._probabilities(static_in).contiguous()
        log.info("%s: captured a CUDA graph for batch shape %s", self.name, tuple(x.shape))
        return graph, static_in, static_out
