#!/usr/bin/env bash
# Build the CPU image: deploy/docker/build.sh [TAG] (default magnet-triton:0.1.0-cpu).
# BASE=image overrides the base (default python:3.11-slim; where no registry is reachable, an image made
# with debootstrap and `docker import`, see deploy/README.md). The wheels of the bundle and its `cpu`
# extra are built here with this machine's pip configuration, then installed offline in the image.
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${1:-magnet-triton:0.1.0-cpu}
BASE=${BASE:-python:3.11-slim}
PYTHON=${PYTHON:-python3}
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# torch is pinned as in scripts/setup.sh (an unpinned one pulls a CUDA build of several GB).
"$PYTHON" -m pip wheel --quiet --wheel-dir "$context/wheels" "torch==${TORCH_VERSION:-2.13.0}" ".[cpu]"
docker build --network host --build-arg "BASE=$BASE" -f deploy/docker/Dockerfile.cpu -t "$TAG" "$context"
echo "built $TAG"
