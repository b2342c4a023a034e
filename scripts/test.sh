#!/usr/bin/env bash
# Lint, then run the test suite. GPU and TensorRT tests skip with a reason on machines without them.
# Usage: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest "$@"
