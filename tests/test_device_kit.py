"""The device kit's pieces, and the server memory sizing the GPU run relies on.

The kit as a whole (``benchmarks/device/prepare.sh`` then ``run.sh --dry-run``) runs in ``.ci/run``:
it downloads wheels and computes the CPU results, minutes that do not belong in the test suite.
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np
import pytest

from magnet_triton.errors import MagnetError
from magnet_triton.export.repository import RepositoryOptions
from magnet_triton.server.sizing import MIB, memory_settings
from magnet_triton.settings import get_preset


def manifest(preset: str, target: str, max_batch: int = 16, pipelines: int = 2) -> dict:
    options = RepositoryOptions(target=target, max_batch=max_batch, pipeline_instances=pipelines)
    return {"target": target, "settings": get_preset(preset).to_dict(), "options": options.__dict__}


def test_the_cuda_pool_holds_every_pipelines_largest_call_twice_over():
    # Cityscapes refiner call at batch 16: 2C = 38 channels in, C = 19 out, 128 x 256 float32.
    call = 16 * (38 + 19) * 128 * 256 * 4
    sized = memory_settings(manifest("cityscapes", "gpu"))
    assert sized.cuda_memory_pool_byte_size >= 2 * 2 * call
    assert sized.cuda_memory_pool_byte_size % (64 * MIB) == 0
    assert sized.cuda_memory_pool_byte_size - 2 * 2 * call < 64 * MIB  # rounded up, not padded
    assert sized.tritonserver_args() == [f"--cuda-memory-pool-byte-size=0:{sized.cuda_memory_pool_byte_size}"]


def test_shared_memory_holds_two_requests_at_the_final_scale():
    # DeepGlobe's final scale 2448 x 2448: image (3 B/px), two class maps (2 B/px), confidence (4 B/px).
    two_requests = 2 * 2448 * 2448 * 9
    sized = memory_settings(manifest("deepglobe", "cpu"))
    assert two_requests <= sized.python_shm_default_byte_size < two_requests + 64 * MIB
    assert memory_settings(manifest("cityscapes", "gpu")).python_shm_default_byte_size == 64 * MIB


def test_small_presets_get_the_minimum_pool_and_cpu_repositories_none():
    assert memory_settings(manifest("cityscapes", "gpu", max_batch=1)).cuda_memory_pool_byte_size == 256 * MIB
    cpu = memory_settings(manifest("deepglobe", "cpu"))
    assert cpu.cuda_memory_pool_byte_size is None and cpu.tritonserver_args() == []


def test_serve_sizes_the_pool_unless_the_user_gave_one(tmp_path):
    import json

    from magnet_triton.server.command import _memory_args

    (tmp_path / "magnet_repository.json").write_text(json.dumps(manifest("deepglobe", "gpu")))
    args = argparse.Namespace(model_repository=tmp_path, triton_arg=[], shm_default_byte_size=None)
    shm, pool = _memory_args(args)
    sized = memory_settings(manifest("deepglobe", "gpu"))
    assert shm == sized.python_shm_default_byte_size == 128 * MIB and pool == sized.tritonserver_args()
    args.triton_arg = ["--cuda-memory-pool-byte-size=0:1024"]
    assert _memory_args(args)[1] == []
    args.model_repository = tmp_path / "not_ours"
    assert _memory_args(args) == (64 * MIB, [])


def test_the_server_root_can_be_pointed_at_an_unpacked_copy(monkeypatch, tmp_path):
    from magnet_triton.server import install

    monkeypatch.setenv(install.ROOT_VARIABLE, str(tmp_path))
    with pytest.raises(MagnetError, match="holds no bin/tritonserver"):
        install._bundled_triton_root()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tritonserver").write_text("")
    assert install._bundled_triton_root() == tmp_path


needs_pytriton = pytest.mark.skipif(
    importlib.util.find_spec("pytriton") is None, reason="nvidia-pytriton is not installed"
)


@needs_pytriton
def test_the_trimmed_server_has_the_312_stub_and_the_libraries_it_links_but_no_libpython():
    from benchmarks.device.packaging import server_files
    from magnet_triton.server.install import _bundled_triton_root

    files = server_files(_bundled_triton_root())
    assert "pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub" in files
    assert not any("/3.11/" in name for name in files)
    libs = {name.split("/")[-1].split("-")[0] for name in files if name.startswith("nvidia_pytriton.libs/")}
    assert {"libtritonserver", "libcudart", "libarchive"} <= libs
    # The stub links the machine's own libpython3.12; the wheel's libpython3.13 serves nothing here.
    assert "libpython3" not in libs


def test_agreement_counts_equal_pixels_and_refuses_other_shapes():
    from benchmarks.device.kit import agreement

    a = np.zeros((4, 5), dtype=np.uint8)
    b = a.copy()
    b[0, :2] = 1
    assert agreement(a, a) == 1.0 and agreement(a, b) == pytest.approx(18 / 20)
    assert agreement(a, np.zeros((5, 4), dtype=np.uint8)) == 0.0


def test_the_kit_manifest_checks_the_travel_budget(tmp_path):
    from benchmarks.device.packaging import MAX_KIT_BYTES, kit_manifest

    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "a.whl").write_bytes(b"x" * 1000)
    record = kit_manifest(tmp_path)
    assert record["files"] == {"wheels/a.whl": 1000} and record["fits"]
    (tmp_path / "big").write_bytes(b"")
    with open(tmp_path / "big", "wb") as f:
        f.truncate(MAX_KIT_BYTES)
    assert not kit_manifest(tmp_path)["fits"]
