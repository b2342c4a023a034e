"""Versions and presets side by side on a real server (issue 14).

One repository holds the tiny preset under the plain names with versions 1 and 2 of its networks (export
``into`` it twice, each time other seeded weights), and the same preset again under the prefix ``second``.
Each served map is compared with the in-process pipeline on the weights it should be using, and the
weight sets are checked to give different maps, so a server that used the wrong ones would fail.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from magnet_triton import io_spec
from tests.tiny_repository import SEED, TINY, build_tiny_repository, scene, skip_without_tritonserver

pytestmark = [pytest.mark.server, pytest.mark.slow]
grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

V2_SEED, SECOND_SEED = SEED + 1, SEED + 2
#: FP32 onnxruntime against PyTorch: the same classes but for near-ties.
AGREEMENT = 0.999


def _local(image: np.ndarray, seed: int) -> np.ndarray:
    from magnet_triton.local import load_networks
    from magnet_triton.pipeline import run_magnet

    return run_magnet(image, TINY, load_networks(TINY, None, [], random_seed=seed)).segmentation


def _served(client, model: str, image: np.ndarray) -> np.ndarray:
    tensor = grpc.InferInput(io_spec.IMAGE, list(image.shape), "UINT8")
    tensor.set_data_from_numpy(image)
    return client.infer(model, [tensor], client_timeout=120).as_numpy(io_spec.SEGMENTATION)


def test_version_2_rolls_out_beside_version_1_and_two_presets_serve_side_by_side(tmp_path):
    from magnet_triton.export.build import export_repository
    from magnet_triton.export.repository import RepositoryOptions, read_manifest
    from magnet_triton.server import TritonServer

    skip_without_tritonserver()
    repository = build_tiny_repository(tmp_path, pipeline_instances=1)
    # A new version keeps the configs there, so it is exported with the options they were written with.
    options = RepositoryOptions(**read_manifest(repository)["options"])
    export_repository(TINY, repository, random_seed=V2_SEED, options=options, into=True)
    second = RepositoryOptions(**{**options.__dict__, "name_prefix": "second"})
    export_repository(TINY, repository, random_seed=SECOND_SEED, options=second, into=True)
    assert sorted(p.name for p in (repository / io_spec.BACKBONE_MODEL).iterdir()) == [
        "1",
        "2",
        "config.pbtxt",
    ]

    image = scene(200, 240, seed=3)
    expected = {seed: _local(image, seed) for seed in (SEED, V2_SEED, SECOND_SEED)}
    # The three weight sets give different maps: a server on the wrong ones cannot pass.
    assert (expected[SEED] == expected[V2_SEED]).mean() < 0.9
    assert (expected[V2_SEED] == expected[SECOND_SEED]).mean() < 0.9

    with (
        TritonServer(repository, log_path=tmp_path / "server.log", model_control=True) as server,
        grpc.InferenceServerClient(server.grpc_url) as client,
    ):
        # Both versions of every network are loaded; the pipeline follows the newest.
        for network in io_spec.DEFAULT_NAMES.networks(TINY.n_refiners):
            assert client.is_model_ready(network, "1") and client.is_model_ready(network, "2")
        assert (_served(client, io_spec.PIPELINE_MODEL, image) == expected[V2_SEED]).mean() >= AGREEMENT
        # The other preset, under its own names, with its own weights.
        assert (_served(client, "second_magnet_pipeline", image) == expected[SECOND_SEED]).mean() >= AGREEMENT
        # Pinned to version 1 (the config parameter), the pipeline goes back to the first weights.
        config = client.get_model_config(io_spec.PIPELINE_MODEL, as_json=True)["config"]
        config["parameters"]["network_version"] = {"string_value": "1"}
        client.load_model(io_spec.PIPELINE_MODEL, config=json.dumps(config))
        assert (_served(client, io_spec.PIPELINE_MODEL, image) == expected[SEED]).mean() >= AGREEMENT
