"""CUDA kernels for the per-scale refinement steps (``magnet-spec.md`` steps 3 and 10-15).

- ``*.cu``: the kernels (package data); ``benchmarks/KERNELS.md`` explains their design.
- :mod:`.build`: nvcc compilation (:func:`compile_kernels`, run at export time) and finding a build for
  a GPU. Needs neither torch nor pycuda.
- :mod:`.launcher`: :class:`CudaSteps`, the ``RefinementSteps`` on the kernels.
- :mod:`.pycuda_backend`: loading and launching with pycuda (the ``gpu`` extra).

``import magnet_triton.kernels`` works without torch, pycuda or a GPU; only :func:`cuda_steps` needs them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from magnet_triton.kernels.build import KernelsUnavailableError, compile_kernels

if TYPE_CHECKING:
    import torch

    from magnet_triton.ops.steps import RefinementSteps

__all__ = ["KernelsUnavailableError", "compile_kernels", "cuda_steps"]

_lock = threading.Lock()
_steps_by_device: dict[tuple[int, str], RefinementSteps] = {}


def cuda_steps(device: torch.device | str | int, *, kernel_dir: str | Path | None = None) -> RefinementSteps:
    """The refinement steps on the CUDA kernels for one CUDA device (cached per device and directory).

    Compiled kernels come from ``kernel_dir``, ``$MAGNET_TRITON_KERNEL_DIR``, ``kernels/compiled/`` in
    the package or the user cache, else are compiled for this GPU where nvcc exists. Raises
    :class:`KernelsUnavailableError` when pycuda or usable kernels are missing, and ``ValueError`` for
    a device that is not CUDA; ``ops.steps.steps_for_device`` then falls back to the PyTorch steps.
    """
    import torch

    from magnet_triton.kernels.launcher import CudaSteps
    from magnet_triton.kernels.pycuda_backend import PycudaBackend

    device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"cuda_steps needs a CUDA device, got {device}")
    if not torch.cuda.is_available():
        raise KernelsUnavailableError("PyTorch sees no CUDA device")
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (index, str(kernel_dir))
    with _lock:
        if key not in _steps_by_device:
            _steps_by_device[key] = CudaSteps(PycudaBackend(index, kernel_dir), torch.device("cuda", index))
        return _steps_by_device[key]
