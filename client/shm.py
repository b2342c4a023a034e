"""Shared-memory regions that carry one request's image to a server on the same machine.

A region lives for one request: create and fill it, register it with the server, point the IMAGE
input at it, infer, unregister, destroy. Outputs come back in the gRPC response as usual; they are a
third of the input's size and would need a region sized before the image size is known.

``register``/``unregister`` return what the client's call returns, so the same region works with the
sync client (a value) and the asyncio client (a coroutine to await).
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import numpy as np

from magnet_triton.client import deps
from magnet_triton.client.errors import SharedMemoryError

log = logging.getLogger(__name__)


# Triton releases a request's inputs (and so its hold on their region) just after it sends the
# response, so an unregister straight after ``infer`` can be refused with "currently in use". The
# hold lasts milliseconds; these waits (about 2 s in all) cover a busy 2-core machine.
UNREGISTER_RETRY_DELAYS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def still_in_use(error: Exception) -> bool:
    """True when the server refused to unregister a region because a request still holds it."""
    return "currently in use" in str(error)


def _unique_name(kind: str) -> str:
    # Unique per process and request: several clients (and threads) share one server's region table.
    return f"magnet_client_{kind}_{os.getpid()}_{uuid.uuid4().hex[:12]}"


class SystemRegion:
    """A POSIX shared-memory region (``/dev/shm``) holding a copy of ``array``.

    The server opens the region by its key, so it must run on this machine (and, in containers,
    share ``/dev/shm`` with this process: ``docker run --ipc=host``).
    """

    kind = "system"

    def __init__(self, array: np.ndarray) -> None:
        shm = deps.system_shared_memory()
        self._shm = shm
        self.name = _unique_name("sys")
        self.key = "/" + self.name
        self.byte_size = int(array.nbytes)
        self._handle: Any = None
        try:
            self._handle = shm.create_shared_memory_region(
                self.name, self.key, self.byte_size, create_only=True
            )
            shm.set_shared_memory_region(self._handle, [np.ascontiguousarray(array)])
        except (shm.SharedMemoryException, OSError) as e:
            self.destroy()
            raise SharedMemoryError(
                f"could not create a {self.byte_size}-byte system shared-memory region {self.key}: {e}; "
                "check that /dev/shm has room, or send without shared memory"
            ) from e

    def register(self, client: Any, timeout_s: float | None, headers: Any = None) -> Any:
        return client.register_system_shared_memory(
            self.name, self.key, self.byte_size, headers=headers, client_timeout=timeout_s
        )

    def unregister(self, client: Any, timeout_s: float | None, headers: Any = None) -> Any:
        return client.unregister_system_shared_memory(self.name, headers=headers, client_timeout=timeout_s)

    def destroy(self) -> None:
        """Unlink the region; safe to call twice."""
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                self._shm.destroy_shared_memory_region(handle)
            except (self._shm.SharedMemoryException, OSError) as e:  # never hide the request's own error
                log.warning("could not remove shared-memory region %s: %s", self.key, e)


class CudaRegion:
    """A CUDA IPC region on GPU ``device_id`` of this machine holding a copy of ``array``.

    Needs cuda-python (``pip install 'tritonclient[cuda]'``) and a server on this machine that can open
    cudaIpc handles of that GPU.
    """

    kind = "CUDA"

    def __init__(self, array: np.ndarray, device_id: int) -> None:
        cudashm = deps.cuda_shared_memory()
        self._cudashm = cudashm
        self.name = _unique_name("cuda")
        self.device_id = int(device_id)
        self.byte_size = int(array.nbytes)
        self._handle: Any = None
        failure = getattr(cudashm, "CudaSharedMemoryException", RuntimeError)
        try:
            self._handle = cudashm.create_shared_memory_region(self.name, self.byte_size, self.device_id)
            cudashm.set_shared_memory_region(self._handle, [np.ascontiguousarray(array)])
            self.raw_handle = cudashm.get_raw_handle(self._handle)
        except (failure, RuntimeError, OSError) as e:
            self.destroy()
            raise SharedMemoryError(
                f"could not create a {self.byte_size}-byte CUDA shared-memory region on GPU {self.device_id}: "
                f"{e}; check the GPU with nvidia-smi, or use via_shared_memory=True instead"
            ) from e

    def register(self, client: Any, timeout_s: float | None, headers: Any = None) -> Any:
        return client.register_cuda_shared_memory(
            self.name,
            self.raw_handle,
            self.device_id,
            self.byte_size,
            headers=headers,
            client_timeout=timeout_s,
        )

    def unregister(self, client: Any, timeout_s: float | None, headers: Any = None) -> Any:
        return client.unregister_cuda_shared_memory(self.name, headers=headers, client_timeout=timeout_s)

    def destroy(self) -> None:
        """Free the device memory; safe to call twice."""
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                self._cudashm.destroy_shared_memory_region(handle)
            except Exception as e:  # cuda-python raises several types; never hide the request's own error
                log.warning("could not free CUDA shared-memory region %s: %s", self.name, e)


Region = SystemRegion | CudaRegion
