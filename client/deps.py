"""Lazy imports of the optional packages the client talks to the server with.

``import magnet_triton.client`` needs only numpy (palettes, overlays, validation). ``tritonclient`` is
imported on first use, so a machine without it still imports the package and gets a
:class:`DependencyMissingError` that says what to install instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from magnet_triton.client.errors import DependencyMissingError

_CLIENT_HINT = "install the client extra: pip install 'magnet-triton[client]' (or 'tritonclient[grpc]')"


def _load(module: str, what: str, hint: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    # tritonclient's CUDA module raises RuntimeError, not ImportError, when cuda-python is missing.
    except (ImportError, RuntimeError) as e:
        raise DependencyMissingError(f"{what} needs {module}, which cannot be imported ({e}); {hint}") from e


def grpc() -> ModuleType:
    """``tritonclient.grpc``."""
    return _load("tritonclient.grpc", "the gRPC client", _CLIENT_HINT)


def grpc_aio() -> ModuleType:
    """``tritonclient.grpc.aio``."""
    return _load("tritonclient.grpc.aio", "the asyncio client", _CLIENT_HINT)


def system_shared_memory() -> ModuleType:
    """``tritonclient.utils.shared_memory`` (POSIX shared memory; Linux and macOS)."""
    return _load("tritonclient.utils.shared_memory", "via_shared_memory", _CLIENT_HINT)


def cuda_shared_memory() -> ModuleType:
    """``tritonclient.utils.cuda_shared_memory``, which needs cuda-python and an NVIDIA GPU."""
    return _load(
        "tritonclient.utils.cuda_shared_memory",
        "via_cuda_shared_memory (CUDA shared memory)",
        "it needs an NVIDIA GPU on the server's machine and cuda-python: pip install 'tritonclient[cuda]'; "
        "or send with via_shared_memory=True (system shared memory) instead",
    )


def inference_server_exception() -> type[BaseException]:
    """``tritonclient.utils.InferenceServerException``, the type every tritonclient call raises."""
    utils = _load("tritonclient.utils", "the gRPC client", _CLIENT_HINT)
    return utils.InferenceServerException
