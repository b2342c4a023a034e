"""``export_repository``: the export as a library call, staged so a half-written repository never appears."""

from __future__ import annotations

import json

import pytest

from magnet_triton import io_spec
from magnet_triton.errors import MagnetError
from magnet_triton.export.repository import MANIFEST
from tests.tiny_repository import SEED, TINY, build_tiny_repository

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return build_tiny_repository(tmp_path_factory.mktemp("library"))


def test_it_writes_every_served_model_with_one_model_per_refiner(repository):
    from magnet_triton.export.repository import RepositoryOptions, served_models

    served = {m.name for m in served_models(TINY, RepositoryOptions())}
    assert {p.name for p in repository.iterdir() if p.is_dir()} == served
    # The progressive pipeline only when asked (export --progressive).
    assert io_spec.PROGRESSIVE_MODEL not in served
    for refiner in io_spec.DEFAULT_NAMES.refiners(TINY.n_refiners):
        assert sorted(p.name for p in (repository / refiner).iterdir()) == ["1", "config.pbtxt"]
        assert (repository / refiner / "1" / "model.onnx").stat().st_size > 1000
    # Nothing of the staging is left beside the repository.
    assert [p.name for p in repository.parent.iterdir()] == [repository.name]


def test_the_manifest_records_the_weights_and_their_parity(repository):
    manifest = json.loads((repository / MANIFEST).read_text())
    assert manifest["runtime"] == "cpu/onnxruntime"
    networks = manifest["provenance"]["networks"]
    assert networks["backbone"] == {"weights": "random", "seed": SEED}
    assert [networks[f"refiner_{i}"]["seed"] for i in (1, 2)] == [SEED + 1, SEED + 2]
    assert all(r["passed"] for r in manifest["provenance"]["parity"].values())


def test_the_recorded_weights_rebuild_the_served_networks(repository):
    import numpy as np
    import torch

    from magnet_triton.export.parity import run_onnxruntime
    from magnet_triton.local import torch_networks
    from magnet_triton.networks.weights import weight_set_from_record

    networks = json.loads((repository / MANIFEST).read_text())["provenance"]["networks"]
    local = torch_networks(TINY, weight_set_from_record(networks, TINY.n_refiners))
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    served = run_onnxruntime(repository / io_spec.BACKBONE_MODEL / "1" / "model.onnx", x)
    np.testing.assert_allclose(served, local.backbone(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_an_existing_folder_is_refused_unless_replacing_an_earlier_repository(repository, tmp_path):
    from magnet_triton.export.build import export_repository

    with pytest.raises(MagnetError, match="not an empty folder"):
        export_repository(TINY, repository, random_seed=SEED)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("keep me")
    with pytest.raises(MagnetError, match=r"holds no magnet_repository\.json"):
        export_repository(TINY, tmp_path / "theirs", random_seed=SEED, replace=True)
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "keep me"


def test_a_failed_export_leaves_nothing_behind(tmp_path):
    from magnet_triton.export.build import export_repository

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MagnetError, match="cannot read checkpoint"):
        export_repository(TINY, tmp_path / "repo", backbone_checkpoint=bad, random_seed=SEED)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]


def test_weights_are_named_the_same_way_everywhere(tmp_path):
    from magnet_triton.networks.weights import weight_set

    with pytest.raises(MagnetError, match="give --backbone and --refiner"):
        weight_set(TINY, None, [], None)
    with pytest.raises(MagnetError, match=r"3 refiner checkpoints.*2 refiner"):
        weight_set(TINY, None, ["a", "b", "c"], 0)
    shared = tmp_path / "r.pth"
    shared.write_bytes(b"")
    weights = weight_set(TINY, None, [shared], 5)
    assert weights.backbone.seed == 5 and {s.checkpoint for s in weights.refiners} == {shared}
    with pytest.raises(MagnetError, match="not found"):
        weight_set(TINY, tmp_path / "missing.pth", [], 0)
