#!/usr/bin/env bash
# Set up if needed, lint, then run the test suite. GPU and TensorRT tests skip with a reason on machines
# without them. Usage: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/magnet-triton ]; then
    bash scripts/setup.sh
fi
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest "$@"
