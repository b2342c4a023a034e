"""Load the compiled kernels with pycuda and launch them in step with PyTorch's CUDA stream.

pycuda is imported here only, so the package imports without it. Facts this relies on:

- PyTorch and pycuda share the device's *primary* context (``Device.retain_primary_context``; never
  ``pycuda.autoinit``, which would create a second context whose pointers PyTorch cannot use). It is
  pushed around each group of launches, because a Triton Python-backend stub may call from any thread.
- pycuda launches only on its own ``Stream`` objects or the legacy default stream (``None``): it cannot
  wrap a foreign stream handle. So, at each hand-off:
  * PyTorch's current stream is the legacy default stream (handle 0, the usual case): launch on it too
    (``stream=None``); stream order alone keeps the kernels after the work that made their inputs and
    before the work that reads their outputs. No synchronisation at all.
  * any other current stream: our pycuda stream, wrapped for PyTorch with ``torch.cuda.ExternalStream``,
    first waits on the current stream and the current stream then waits on ours (events, no host
    sync). Tensors PyTorch allocated on the current stream stay valid: nothing queued there after the
    second wait can run before our kernels finish.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from magnet_triton.kernels.build import KernelsUnavailableError, ensure_kernels, read_modules
from magnet_triton.kernels.launcher import KERNEL_SIGNATURES, Grid

log = logging.getLogger(__name__)


class PycudaBackend:
    """The compiled modules loaded into the primary context of one GPU."""

    def __init__(self, device_index: int, kernel_dir: str | Path | None = None) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError as e:
            raise KernelsUnavailableError(
                "pycuda is not installed (pip install 'magnet-triton[gpu]' on a machine with the CUDA "
                "toolkit and driver)"
            ) from e
        self._cuda = cuda
        self.device_index = device_index
        cuda.init()
        device = cuda.Device(device_index)
        self.capability: tuple[int, int] = device.compute_capability()
        self.sm_count: int = device.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
        self.kernel_dir = ensure_kernels(self.capability, kernel_dir)
        self._context = device.retain_primary_context()
        self._context.push()
        try:
            modules = [cuda.module_from_buffer(image) for image in read_modules(self.kernel_dir).values()]
            self._functions = {}
            for name, fmt in KERNEL_SIGNATURES.items():
                function = _find(modules, name)
                function.prepare(fmt)
                self._functions[name] = function
            self._stream = cuda.Stream()
        finally:
            cuda.Context.pop()
        self._modules = modules  # keep them loaded as long as the functions are used
        self._torch_stream = torch.cuda.ExternalStream(
            self._stream.handle, device=torch.device("cuda", device_index)
        )
        log.info(
            "MagNet kernels from %s loaded on GPU %d (sm_%d%d)",
            self.kernel_dir,
            device_index,
            *self.capability,
        )

    @contextmanager
    def session(self) -> Iterator[object]:
        """Make the primary context current and hand off streams with PyTorch (see the module doc)."""
        current = torch.cuda.current_stream(torch.device("cuda", self.device_index))
        self._context.push()
        try:
            if current.cuda_stream == 0:
                yield None
            else:
                self._torch_stream.wait_stream(current)
                yield self._stream
                current.wait_stream(self._torch_stream)
        finally:
            self._cuda.Context.pop()

    def launch(
        self,
        name: str,
        grid: Grid,
        block: Grid,
        args: Sequence[int | float],
        stream: object,
        shared_bytes: int = 0,
    ) -> None:
        self._functions[name].prepared_async_call(grid, block, stream, *args, shared_size=shared_bytes)


def _find(modules: list[Any], name: str) -> Any:  # a pycuda Function
    for module in modules:
        try:
            return module.get_function(name)
        except Exception:  # pycuda raises LogicError for a name the module lacks
            continue
    raise KernelsUnavailableError(
        f"no kernel {name!r} in the compiled modules; rebuild them with compile_kernels"
    )
