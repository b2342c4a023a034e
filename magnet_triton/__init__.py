"""MagNet progressive semantic segmentation, packaged for NVIDIA Triton and TensorRT.

Importing this package pulls in nothing heavy: torch, onnx, TensorRT and pycuda are imported by the
sub-modules that need them, so the client and every ``--help`` work on a bare machine.
"""

from magnet_triton.errors import MagnetError

__all__ = ["MagnetError", "__version__"]
__version__ = "0.1.0"
