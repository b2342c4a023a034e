"""The ``inria`` and ``gleason`` presets export (ONNX, checked against PyTorch) and serve on the CPU target.

Seeded random weights. A request in mode ``downsample`` (one backbone patch, the coarse pass) keeps the
check to seconds: the full presets refine 85 patches of 625 x 625 at a 5000 x 5000 final scale, minutes
on two cores. The served coarse map must equal the in-process pipeline's on the same weights.
"""

from __future__ import annotations

import numpy as np
import pytest

from magnet_triton import io_spec
from magnet_triton.settings import get_preset
from tests.tiny_repository import png_bytes, scene, skip_without_tritonserver

pytestmark = pytest.mark.server
grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")


@pytest.mark.parametrize("preset", ["inria", "gleason"])
def test_the_preset_exports_and_serves_its_coarse_pass(preset, tmp_path):
    from magnet_triton.export.build import export_repository
    from magnet_triton.export.repository import RepositoryOptions, default_max_image_pixels, read_manifest
    from magnet_triton.local import load_networks
    from magnet_triton.pipeline import run_magnet
    from magnet_triton.server import TritonServer

    skip_without_tritonserver()
    settings = get_preset(preset)
    options = RepositoryOptions(max_image_pixels=default_max_image_pixels(settings), pipeline_instances=1)
    repository = export_repository(settings, tmp_path / "repository", random_seed=0, options=options)
    manifest = read_manifest(repository)
    assert manifest["settings"]["name"] == preset
    assert manifest["options"]["max_image_pixels"] == 5000 * 5000  # a whole tile is admitted

    image = scene(300, 420, seed=5)
    mode = grpc.InferInput(io_spec.MODE, [1], "BYTES")
    mode.set_data_from_numpy(np.array([b"downsample"], dtype=np.object_))
    data = grpc.InferInput(io_spec.IMAGE_BYTES, [1], "BYTES")
    data.set_data_from_numpy(np.array([png_bytes(image)], dtype=np.object_))
    with (
        TritonServer(repository, log_path=tmp_path / "server.log") as server,
        grpc.InferenceServerClient(server.grpc_url) as client,
    ):
        result = client.infer(io_spec.ENSEMBLE_MODEL, [data, mode], client_timeout=300)
    served = result.as_numpy(io_spec.SEGMENTATION)
    assert served.shape == image.shape[:2] and served.max() < settings.num_classes

    networks = load_networks(settings.with_overrides(mode="downsample"), None, [], random_seed=0)
    local = run_magnet(image, settings.with_overrides(mode="downsample"), networks)
    # FP32 onnxruntime against PyTorch: ties aside, the same classes.
    assert (served == local.segmentation).mean() >= 0.999
