"""Build stage: checkpoints in, a Triton model repository out.

    from magnet_triton.export import RepositoryOptions, export_repository
    from magnet_triton.settings import get_preset

    export_repository(get_preset("deepglobe"), "repo", backbone_checkpoint="fpn.pth",
                      refiner_checkpoints=["refiner.pth"], options=RepositoryOptions(target="cpu"))

The pieces: :mod:`.onnx_export` and :mod:`.graph_cleanup` (ONNX), :mod:`.parity` (checks against
PyTorch), :mod:`.tensorrt_build` (engines), :mod:`.artifacts` (all networks of a preset),
:mod:`.repository` (the configs and the folder), :mod:`.build` (all of it, staged). Heavy libraries are
imported by the functions that use them.
"""

from __future__ import annotations

from magnet_triton.lazy import lazy_attributes

_EXPORTS = {
    "export_repository": "magnet_triton.export.build",
    "RepositoryOptions": "magnet_triton.export.repository",
    "build_artifacts": "magnet_triton.export.artifacts",
}
__getattr__ = lazy_attributes(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
