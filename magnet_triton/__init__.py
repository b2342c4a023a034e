"""MagNet progressive semantic segmentation, packaged for NVIDIA Triton and TensorRT.

Importing this package pulls in nothing heavy: torch, onnx, TensorRT and pycuda are imported by the
sub-modules that need them, so the client and every ``--help`` work on a bare machine.
"""

import importlib.metadata

from magnet_triton.errors import MagnetError

__all__ = ["MagnetError", "__version__"]

try:
    # pyproject.toml is the one home of the version; an installed package carries it in its metadata.
    __version__ = importlib.metadata.version("magnet-triton")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
