"""Closed by default, against a real tritonserver: the admin APIs behind a key, no HTTP unless asked,
and gRPC over TLS with a throwaway certificate (made here with ``openssl``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from magnet_triton.server.access import AdminKey, GrpcTls
from tests.tiny_repository import build_tiny_repository, png_bytes, scene, skip_without_tritonserver

pytestmark = pytest.mark.server
grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

IDENTITY_REPO = Path(__file__).parent / "fixtures" / "identity_repo"
KEY = AdminKey("test-admin-key-0123", "magnet-admin-key")
RESTRICTED = "This protocol is restricted, expecting header 'triton-grpc-protocol-magnet-admin-key'"


@pytest.fixture(scope="module")
def closed_server(tmp_path_factory):
    from magnet_triton.server import TritonServer

    skip_without_tritonserver()
    log = tmp_path_factory.mktemp("closed") / "server.log"
    with TritonServer(IDENTITY_REPO, admin_key=KEY, log_path=log) as running:
        yield running


@pytest.fixture
def client(closed_server):
    with grpc.InferenceServerClient(closed_server.grpc_url) as c:
        yield c


ADMIN_CALLS = {
    "shared-memory": lambda c, h: c.register_system_shared_memory("probe", "/probe", 8, headers=h),
    "model-repository (load)": lambda c, h: c.load_model("identity", headers=h),
    "model-repository (index)": lambda c, h: c.get_model_repository_index(headers=h),
    "logging": lambda c, h: c.update_log_settings({"log_verbose_level": 0}, headers=h),
    "trace": lambda c, h: c.update_trace_settings(settings={"trace_rate": "1000"}, headers=h),
}


@pytest.mark.parametrize("api", ADMIN_CALLS)
def test_an_admin_api_refuses_a_client_without_the_key(client, api):
    with pytest.raises(InferenceServerException) as refused:
        ADMIN_CALLS[api](client, None)
    assert refused.value.status() == "StatusCode.UNAVAILABLE"
    assert RESTRICTED in refused.value.message()
    with pytest.raises(InferenceServerException, match="restricted"):
        ADMIN_CALLS[api](client, {"triton-grpc-protocol-magnet-admin-key": "a-wrong-key"})


def test_the_key_opens_the_admin_apis(client):
    index = client.get_model_repository_index(headers=KEY.headers(), as_json=True)
    assert {m["name"] for m in index["models"]} == {"bls", "identity"}
    client.update_log_settings({"log_verbose_level": 0}, headers=KEY.headers())


def test_inference_health_configs_and_statistics_stay_open(client):
    x = np.arange(5, dtype=np.float32)[None]
    inputs = [grpc.InferInput("IN_FP32", [1, 5], "FP32"), grpc.InferInput("IN_U8", [1, 3], "UINT8")]
    inputs[0].set_data_from_numpy(x)
    inputs[1].set_data_from_numpy(np.zeros((1, 3), np.uint8))
    np.testing.assert_array_equal(client.infer("identity", inputs).as_numpy("OUT_FP32"), x)
    assert client.is_server_ready() and client.is_model_ready("identity")
    assert client.get_model_config("identity", as_json=True)["config"]["name"] == "identity"
    assert client.get_inference_statistics("identity", as_json=True)["model_stats"]


def test_http_is_not_served_unless_asked(closed_server):
    log = closed_server.log_text()
    assert "Started GRPCInferenceService" in log
    assert "HTTPService" not in log
    with pytest.raises(RuntimeError, match="does not serve HTTP"):
        _ = closed_server.http_url


def test_asking_for_http_restricts_it_with_the_same_key():
    from magnet_triton.server import TritonServer

    server = TritonServer(IDENTITY_REPO, http=True, admin_key=KEY)
    server._ports = {"grpc": 1, "http": 2, "metrics": 3}  # command() needs ports; nothing is started
    command = server.command()
    rule = "shared-memory,model-repository,logging,trace:magnet-admin-key=test-admin-key-0123"
    assert f"--http-restricted-api={rule}" in command
    assert f"--grpc-restricted-protocol={rule}" in command
    assert "--allow-http=false" not in command


def test_the_logged_command_line_hides_the_admin_key_that_tritonserver_is_given(caplog):
    import logging

    from magnet_triton.server import TritonServer

    server = TritonServer(IDENTITY_REPO, http=True, admin_key=KEY)
    server._ports = {"grpc": 1, "http": 2, "metrics": 3}  # command() needs ports; nothing is started
    assert any(KEY.value in arg for arg in server.command())  # Triton takes it only as an argument
    shown = server.command_for_log()
    assert KEY.value not in shown
    assert (
        "--grpc-restricted-protocol=shared-memory,model-repository,logging,trace:magnet-admin-key=<admin key>"
        in shown
    )
    # The line logged when the server starts is this one.
    skip_without_tritonserver()
    with (
        caplog.at_level(logging.INFO, logger="magnet_triton.server.process"),
        TritonServer(IDENTITY_REPO, admin_key=KEY),
    ):
        pass
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("starting ")]
    assert len(started) == 1 and "<admin key>" in started[0] and KEY.value not in started[0]


def test_a_bad_admin_key_is_refused_with_the_rule():
    with pytest.raises(ValueError, match="without spaces"):
        AdminKey("has space")
    with pytest.raises(ValueError, match="lower case"):
        AdminKey("fine", "Magnet-Key")


# -- TLS --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> GrpcTls:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl here to make a throwaway certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
    ]
    subject_names = ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    subprocess.run(
        [*request, *subject_names, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return GrpcTls(cert, key)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, certificate):
    from magnet_triton.server import TritonServer

    skip_without_tritonserver()
    repository = build_tiny_repository(tmp_path_factory.mktemp("tls-repo"))
    with TritonServer(
        repository, tls=certificate, admin_key=KEY, log_path=repository.parent / "server.log"
    ) as running:
        yield running


def magnet_client(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "magnet_triton.client.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def test_magnet_client_segments_over_tls(tls_server, certificate, tmp_path):
    image = tmp_path / "street.png"
    image.write_bytes(png_bytes(scene(70, 90)))
    url = ["--url", tls_server.grpc_url, "--ssl", "--root-certificates", str(certificate.cert)]
    done = magnet_client("segment", str(image), "--out", str(tmp_path / "out"), "-q", *url)
    assert done.returncode == 0, done.stderr
    from PIL import Image

    assert Image.open(tmp_path / "out" / "street.png").size == (90, 70)
    health = magnet_client("health", *url)
    assert health.returncode == 0, health.stdout + health.stderr
    assert "magnet_pipeline" in health.stdout  # from the statistics: the index is behind the key


def test_a_plaintext_client_cannot_reach_the_tls_server_and_gets_no_traceback(tls_server):
    done = magnet_client("health", "--url", tls_server.grpc_url, "--retries", "0", "--timeout-s", "5")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert tls_server.grpc_url in done.stderr


def test_the_probe_command_works_over_tls(tls_server, certificate):
    command = [sys.executable, "-m", "magnet_triton.cli", "probe", "--url", tls_server.grpc_url]
    command += ["--ssl", "--root-certificates", str(certificate.cert)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "magnet_backbone v1: ok" in done.stdout


def test_the_probe_command_refuses_a_missing_certificate_without_a_traceback(tmp_path):
    command = [sys.executable, "-m", "magnet_triton.cli", "probe", "--url", "127.0.0.1:1", "--ssl"]
    done = subprocess.run(
        [*command, "--root-certificates", str(tmp_path / "missing.pem")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "missing.pem is not a file" in done.stderr and "Traceback" not in done.stderr
