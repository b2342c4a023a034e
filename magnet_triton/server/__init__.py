"""Start and stop a real ``tritonserver`` for a model repository, and the ``magnet-triton serve`` command.

- :mod:`.install`: :func:`find_tritonserver`, which also makes the ``nvidia-pytriton`` binary runnable.
- :mod:`.process`: :class:`TritonServer`, the process on free local ports, as a context manager.
- :mod:`.command`: ``register(subparsers)`` for the command line.
"""

from magnet_triton.server.command import register
from magnet_triton.server.install import ServerInstall, find_tritonserver
from magnet_triton.server.process import (
    DEFAULT_PYTHON_SHM_BYTE_SIZE,
    DEFAULT_PYTHON_SHM_GROWTH_BYTE_SIZE,
    TritonServer,
    free_port,
)

__all__ = [
    "DEFAULT_PYTHON_SHM_BYTE_SIZE",
    "DEFAULT_PYTHON_SHM_GROWTH_BYTE_SIZE",
    "ServerInstall",
    "TritonServer",
    "find_tritonserver",
    "free_port",
    "register",
]
