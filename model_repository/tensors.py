"""Tensors between torch and Triton's Python backend: DLPack on a GPU, numpy on the CPU."""

from __future__ import annotations

from typing import Any

import torch


def to_triton(name: str, tensor: torch.Tensor, pb_utils: Any) -> Any:
    """A ``pb_utils.Tensor`` called ``name`` holding ``tensor`` (a GPU tensor stays on its GPU)."""
    tensor = tensor.contiguous()
    if tensor.is_cuda:
        return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(tensor))
    return pb_utils.Tensor(name, tensor.numpy())


def from_triton(tensor: Any, device: torch.device) -> torch.Tensor:
    """The data of a ``pb_utils.Tensor`` as a torch tensor on ``device``."""
    if tensor.is_cpu():
        # The numpy view points into the request's or response's memory, which goes away with it: copy.
        return torch.from_numpy(tensor.as_numpy().copy()).to(device)
    return torch.utils.dlpack.from_dlpack(tensor.to_dlpack()).to(device)
