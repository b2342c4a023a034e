"""The torch engine served by a real tritonserver: the stand-in for the GPU path where TensorRT cannot be.

The CPU repository uses ``cpu/torch``; ``gpu/torch`` runs the same runner on ``KIND_GPU`` instances.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from magnet_triton import io_spec
from tests.tiny_repository import SEED, TINY, png_bytes, scene, serving_tiny_repository

pytestmark = pytest.mark.server
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving_tiny_repository(tmp_path_factory.mktemp("tiny_torch"), engine="torch") as running:
        yield running


def test_the_repository_serves_network_files_through_the_torch_runner(server):
    manifest = json.loads((server.model_repository / "magnet_repository.json").read_text())
    assert manifest["runtime"] == "cpu/torch"
    version = server.model_repository / io_spec.DEFAULT_NAMES.refiner(1) / "1"
    assert {"model.pt", "model.py"} <= {p.name for p in version.iterdir()}
    assert not (version / "model.onnx").exists()
    assert "torch_runner_model" in (version / "model.py").read_text()


@pytest.mark.parametrize("encoded", [False, True], ids=["pixels", "png"])
def test_served_class_maps_equal_the_in_process_pipeline(server, encoded):
    from magnet_triton.client import MagnetClient
    from magnet_triton.local import load_networks
    from magnet_triton.pipeline import run_magnet

    image = scene(120, 170, seed=5)
    with MagnetClient(server.grpc_url) as client:
        result = client.segment(png_bytes(image) if encoded else image)
    local = run_magnet(image, TINY, load_networks(TINY, None, [], random_seed=SEED, max_batch=4))
    # The same PyTorch networks on the same CPU: only the batching of patches differs, which moves
    # float sums in the last bits, so a handful of near-tie pixels may flip.
    assert (result.segmentation == local.segmentation).mean() >= 0.999
    np.testing.assert_allclose(result.confidence, local.confidence, atol=1e-4)
