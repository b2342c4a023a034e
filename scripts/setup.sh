#!/usr/bin/env bash
# Create .venv and install the bundle with everything the CPU target and the tests need.
# Usage: scripts/setup.sh            (idempotent; re-run after pulling)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# torch is pinned because an unpinned request pulls the newest CUDA build (several GB) from PyPI;
# 2.13.0 is the release this bundle is tested with.
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "set up: $(.venv/bin/python -c 'import torch, numpy, onnxruntime; print(f"torch {torch.__version__}, numpy {numpy.__version__}, onnxruntime {onnxruntime.__version__}")')"
echo "activate with: . .venv/bin/activate"
