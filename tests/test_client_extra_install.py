"""The client extra installs into a fresh environment without torch and imports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: What the wheel is built from (pyproject's package-dir), copied so pip builds nothing inside the checkout.
SOURCES = ("pyproject.toml", "README.md", "magnet_triton", "client", "export", "model_repository")
#: pip output that means the index could not be reached, as opposed to the project failing to install.
_NETWORK_TROUBLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Network is unreachable|ConnectTimeoutError|ReadTimeoutError|Max retries exceeded|"
    r"ProxyError|SSLError|Could not fetch URL"
)


def _run(cmd: list[str], *, timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout_s, check=False, env=env, cwd="/"
    )


@pytest.mark.slow
def test_the_client_extra_installs_without_torch_and_imports(tmp_path):
    source = tmp_path / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif path.is_file():
            source.mkdir(exist_ok=True)
            shutil.copy2(path, source / name)

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], timeout_s=120)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"

    install = _run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", f"{source}[client]"],
        timeout_s=600,
    )
    if install.returncode != 0:
        tail = "\n".join((install.stdout + install.stderr).splitlines()[-25:])
        if _NETWORK_TROUBLE.search(install.stdout + install.stderr):
            pytest.skip(f"no package index reachable to install the client extra:\n{tail}")
        pytest.fail(f"pip install '.[client]' failed:\n{tail}")

    check = _run(
        [
            str(python),
            "-c",
            "import importlib.util, sys\n"
            "import magnet_triton.client as c\n"
            "client = c.MagnetClient('127.0.0.1:8001', retries=0)\n"
            "client.close()\n"
            "print('torch' if importlib.util.find_spec('torch') else 'no torch')\n"
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'cv2', 'tensorrt') if m in sys.modules))",
        ],
        timeout_s=120,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split("\n")[:2] == ["no torch", "[]"]
    no_torch = _run([str(python), "-c", "import torch"], timeout_s=60)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
