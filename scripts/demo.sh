#!/usr/bin/env bash
# The main job: set up, export a CPU model repository, start the bundled tritonserver, segment an image
# over gRPC, write the class map and an overlay, stop the server.
# Usage: scripts/demo.sh [magnet-triton demo options, e.g. --image FILE --backbone B.pth --refiner R.pth]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
magnet-triton demo "$@"
