"""The server launcher against a real tritonserver and a real gRPC client.

Uses ``tests/fixtures/identity_repo``: ``identity`` (batched Python-backend echo) and ``bls`` (calls
``identity`` through BLS ``exec()`` and ``async_exec()``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from magnet_triton.errors import MagnetError
from magnet_triton.server import ServerInstall, TritonServer, find_tritonserver
from magnet_triton.server import install as install_mod
from magnet_triton.server import process as process_mod
from magnet_triton.server.allocator import choose_allocator

REPO = Path(__file__).parent / "fixtures" / "identity_repo"

needs_tritonserver = pytest.mark.skipif(
    shutil.which("tritonserver") is None and importlib.util.find_spec("pytriton") is None,
    reason="no tritonserver: pip install nvidia-pytriton (CPU target) or use the NGC tritonserver container",
)
needs_client = pytest.mark.skipif(
    importlib.util.find_spec("tritonclient") is None, reason="tritonclient is not installed"
)


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> ServerInstall:
    return find_tritonserver(cache_root=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def server(install: ServerInstall) -> Iterator[TritonServer]:
    with TritonServer(REPO, install=install, startup_timeout_s=60) as s:
        yield s


@pytest.fixture
def client(server: TritonServer):
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


def _identity_inputs(x: np.ndarray, y: np.ndarray, x_dtype: str = "FP32") -> list:
    import tritonclient.grpc as grpcclient

    a = grpcclient.InferInput("IN_FP32", list(x.shape), x_dtype)
    a.set_data_from_numpy(x)
    b = grpcclient.InferInput("IN_U8", list(y.shape), "UINT8")
    b.set_data_from_numpy(y)
    return [a, b]


def _bls_inputs(x: np.ndarray, tag: bytes) -> list:
    import tritonclient.grpc as grpcclient

    a = grpcclient.InferInput("X", list(x.shape), "FP32")
    a.set_data_from_numpy(x)
    b = grpcclient.InferInput("TAG", [1], "BYTES")
    b.set_data_from_numpy(np.array([tag], dtype=np.object_))
    return [a, b]


def test_find_tritonserver_without_any_install_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(install_mod, "_bundled_triton_root", lambda: None)
    with pytest.raises(MagnetError, match="pip install nvidia-pytriton") as info:
        find_tritonserver(cache_root=tmp_path)
    assert "nvcr.io/nvidia/tritonserver" in str(info.value)


def test_a_python_without_its_shared_library_is_refused_before_the_server_starts(monkeypatch, tmp_path):
    # Debian's python3 without its libpython3.X package: every stub would fail to load and the server
    # would never be ready (what the CPU image did on a debootstrap base).
    if install_mod._bundled_triton_root() is None:
        pytest.skip("nvidia-pytriton is not installed: no bundled tritonserver to check")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(install_mod, "_libpython_dir", lambda: None)

    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(install_mod.ctypes, "CDLL", no_library)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(MagnetError, match=f"needs libpython{version}.so.1.0") as info:
        find_tritonserver(cache_root=tmp_path)
    assert f"apt-get install libpython{version}" in str(info.value)
    assert "--enable-shared" in str(info.value)


def test_numpy2_in_the_environment_logs_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(process_mod.importlib.metadata, "version", lambda name: "2.4.6")
    with caplog.at_level(logging.WARNING, logger=process_mod.__name__):
        process_mod._warn_if_numpy2()
    assert "numpy<2" in caplog.text


@pytest.mark.server
@needs_tritonserver
@needs_client
class TestRealServer:
    def test_bundled_install_has_python_backend_and_stub(self, install):
        if install.bundled:
            assert (install.backend_dir / "python" / "libtriton_python.so").is_file()
            assert os.access(install.backend_dir / "python" / "triton_python_backend_stub", os.X_OK)
            assert find_tritonserver(cache_root=install.backend_dir.parent) == install  # idempotent

    def test_identity_round_trips_float32_and_uint8(self, client):
        x = np.random.default_rng(0).standard_normal((1, 7)).astype(np.float32)
        y = np.arange(11, dtype=np.uint8)[None, :]
        result = client.infer("identity", _identity_inputs(x, y))
        np.testing.assert_array_equal(result.as_numpy("OUT_FP32"), x)
        np.testing.assert_array_equal(result.as_numpy("OUT_U8"), y)
        assert result.as_numpy("OUT_U8").dtype == np.uint8

    def test_bls_exec_and_async_exec_return_identity_results(self, client):
        x = np.linspace(-1, 1, 96 * 24, dtype=np.float32)  # 9216 bytes, design.md's failing size
        result = client.infer("bls", _bls_inputs(x, b"tag-\xc3\xa9"))
        np.testing.assert_array_equal(result.as_numpy("OUT_SYNC"), 2 * x)
        np.testing.assert_array_equal(result.as_numpy("OUT_ASYNC"), x + 1)
        assert result.as_numpy("TAG_OUT")[0] == b"tag-\xc3\xa9"

    def test_model_py_runs_in_this_environment(self, client):
        info = json.loads(client.infer("bls", _bls_inputs(np.zeros(2, np.float32), b"")).as_numpy("INFO")[0])
        assert info["sys_prefix"] == sys.prefix
        assert info["numpy"] == np.__version__

    def test_request_parameters_reach_model_py(self, client):
        params = {"scale": 2, "name": "x", "flag": True}
        result = client.infer("bls", _bls_inputs(np.zeros(2, np.float32), b""), parameters=params)
        assert json.loads(result.as_numpy("INFO")[0])["parameters"] == params

    def test_wrong_dtype_gets_a_clear_error_and_the_server_keeps_serving(self, client):
        from tritonclient.utils import InferenceServerException

        y = np.zeros((1, 3), np.uint8)
        with pytest.raises(InferenceServerException, match=r"IN_FP32.*INT32|INT32.*IN_FP32"):
            client.infer("identity", _identity_inputs(np.zeros((1, 3), np.int32), y, "INT32"))
        x = np.ones((1, 3), np.float32)
        np.testing.assert_array_equal(
            client.infer("identity", _identity_inputs(x, y)).as_numpy("OUT_FP32"), x
        )

    def test_triton_error_response_reaches_the_client_and_the_server_keeps_serving(self, client):
        from tritonclient.utils import InferenceServerException

        x, y = np.ones((1, 3), np.float32), np.zeros((1, 3), np.uint8)
        with pytest.raises(InferenceServerException, match="asked to fail"):
            client.infer("identity", _identity_inputs(x, y), parameters={"fail": "please"})
        np.testing.assert_array_equal(
            client.infer("identity", _identity_inputs(x, y)).as_numpy("OUT_FP32"), x
        )

    def test_dynamic_batching_gives_concurrent_requests_one_execute_call(self, client):
        results: queue.Queue = queue.Queue()
        y = np.zeros((1, 2), np.uint8)
        for i in range(4):
            x = np.full((1, 2), i, np.float32)
            client.async_infer(
                "identity", _identity_inputs(x, y), lambda result, error: results.put((result, error))
            )
        outs = [results.get(timeout=30) for _ in range(4)]
        assert all(e is None for _, e in outs)
        assert sorted(float(r.as_numpy("OUT_FP32")[0, 0]) for r, _ in outs) == [0, 1, 2, 3]
        assert max(int(r.as_numpy("EXECUTE_REQUESTS")[0, 0]) for r, _ in outs) > 1

    def test_two_servers_run_at_once_and_their_processes_are_gone_after_exit(self, server, install):
        import tritonclient.grpc as grpcclient

        with TritonServer(REPO, install=install, startup_timeout_s=60) as second:
            assert second.grpc_url != server.grpc_url
            assert second.ready_models() == ["bls", "identity"]
            c = grpcclient.InferenceServerClient(second.grpc_url)
            assert c.is_server_ready() and c.is_model_ready("bls")
            c.close()
            pid, prefix = second.pid, second._shm_prefix
        assert not second.is_running()
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # neither the server nor a stub is left
        assert not list(Path("/dev/shm").glob(f"{prefix}*"))
        assert server.is_running()

    def test_the_chosen_allocator_is_preloaded_into_the_server_and_every_stub(self, server, install):
        try:
            allocator = choose_allocator("tcmalloc")
        except MagnetError as e:
            pytest.skip(str(e))

        def mapped(pid: int) -> bool:
            return allocator.library in Path(f"/proc/{pid}/maps").read_text()

        if "LD_PRELOAD" not in os.environ:  # without one, the module's server runs glibc's malloc
            assert not mapped(server.pid)
        with TritonServer(REPO, install=install, startup_timeout_s=60, allocator=allocator) as s:
            assert s.ready_models() == ["bls", "identity"]
            stubs = s.live_stubs()
            assert len(stubs) >= 2  # one per model instance
            assert mapped(s.pid) and all(mapped(stub.pid) for stub in stubs)

    def test_a_model_that_fails_to_load_raises_with_the_server_log(self, tmp_path, install):
        model = tmp_path / "broken" / "1"
        model.mkdir(parents=True)
        (model / "model.py").write_text(
            "class TritonPythonModel:\n"
            "    def initialize(self, args):\n"
            "        raise RuntimeError('broken on purpose')\n"
        )
        (tmp_path / "broken" / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 0\n')
        with pytest.raises(MagnetError, match="broken on purpose"):
            TritonServer(tmp_path, install=install, startup_timeout_s=60).start()

    def test_serve_command_prints_endpoints_and_stops_on_sigterm(self, free_port):
        ports = [str(free_port()) for _ in range(3)]
        code = (
            "import sys, magnet_triton.cli as cli\n"
            "if not any(m.startswith('magnet_triton.server') for m in cli.COMMAND_MODULES):\n"
            "    cli.COMMAND_MODULES = (*cli.COMMAND_MODULES, 'magnet_triton.server')\n"
            "sys.exit(cli.main(sys.argv[1:]))\n"
        )
        argv = ["serve", "--model-repository", str(REPO), "--grpc-port", ports[0]]
        argv += ["--http-port", ports[1], "--metrics-port", ports[2]]
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            lines = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if line.startswith("serving"):
                    break
            text = "".join(lines)
            assert f"127.0.0.1:{ports[0]}" in text
            assert "bls, identity" in text
            # Closed by default: no HTTP, the admin APIs behind a generated key, supervised.
            assert "HTTP     off" in text
            assert "shared-memory, model-repository, logging, trace APIs closed (a generated key" in text
            assert "watch    stubs every 0.5 s, probes every 30 s" in text
            assert "malloc   glibc malloc (nothing preloaded)" in text  # --allocator system
            proc.send_signal(signal.SIGTERM)
            rest, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, text + rest
        assert "stopping" in rest
