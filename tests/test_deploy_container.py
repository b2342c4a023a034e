"""The CPU image (deploy/docker/Dockerfile.cpu) serves a mounted repository: healthy on Triton's HTTP
endpoints, and its class map equal to the one of a server on this machine (the same wheels, the same CPU).

Needs a Docker daemon; skips with the daemon's own answer where none runs. Start one on Debian as root
(no bridge, no iptables, containers on the host network; design.md):

    dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs &

The image is ``$MAGNET_TRITON_IMAGE`` when set, else built with deploy/docker/build.sh (``$BASE`` as
there; with no registry reachable, a base made with debootstrap and ``docker import``: deploy/README.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from magnet_triton.server import free_port
from tests.server_metrics import wait_until
from tests.tiny_repository import build_tiny_repository, png_bytes, scene, serving_tiny_repository

pytestmark = [pytest.mark.container, pytest.mark.slow]
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TAG = "magnet-triton:0.1.0-cpu"


def docker(*args: str, timeout_s: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") is None:
        pytest.skip("no docker command (Debian: apt-get install docker.io)")
    info = docker("info", "--format", "{{.ServerVersion}}", check=False)
    if info.returncode != 0:
        pytest.skip(f"no Docker daemon answers: {info.stderr.strip() or info.stdout.strip()}")
    tag = os.environ.get("MAGNET_TRITON_IMAGE", DEFAULT_TAG)
    if docker("image", "inspect", tag, check=False).returncode != 0:
        subprocess.run(["bash", str(ROOT / "deploy/docker/build.sh"), tag], check=True, timeout=3600)
    return tag


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_the_cpu_image_serves_a_mounted_repository_like_a_server_here(image, tmp_path):
    from magnet_triton.client import MagnetClient

    repository = build_tiny_repository(tmp_path)
    subprocess.run(["chmod", "-R", "a+rX", str(repository)], check=True)  # the image runs as uid 1000
    picture = png_bytes(scene(90, 130, seed=3))
    with serving_tiny_repository(tmp_path / "here") as here, MagnetClient(here.grpc_url) as client:
        expected = client.segment(picture, outputs=()).segmentation

    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    name = f"magnet-test-{uuid.uuid4().hex[:8]}"
    docker(
        "run", "-d", "--rm", "--name", name, "--network", "host", "--shm-size", "1g",
        "-v", f"{repository}:/models:ro", image,
        "serve", "--model-repository=/models", "--host=127.0.0.1", "--http",
        f"--grpc-port={grpc_port}", f"--http-port={http_port}", f"--metrics-port={metrics_port}",
    )  # fmt: skip
    try:
        ready = f"http://127.0.0.1:{http_port}/v2/health/ready"
        wait_until(lambda: _ready(ready), "the container's server ready", timeout_s=300)
        assert _ready(f"http://127.0.0.1:{http_port}/v2/health/live")
        with MagnetClient(f"127.0.0.1:{grpc_port}") as client:
            served = client.segment(picture, outputs=()).segmentation
        np.testing.assert_array_equal(served, expected)

        # serve prints "serving" after Triton is ready (it lists the models and the memory plan first);
        # `docker logs` replays the container's stdout and stderr on two streams of its own.
        def logs() -> str:
            done = docker("logs", name)
            return done.stdout + done.stderr

        wait_until(lambda: "serving; Ctrl-C or SIGTERM stops" in logs(), "serve's serving line", timeout_s=60)
        assert "<admin key>" in logs()  # the generated key is not written to the container's log
    finally:
        docker("rm", "-f", name, check=False)
