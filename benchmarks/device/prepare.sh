#!/usr/bin/env bash
# Assemble the device kit in benchmarks/device/kit/ (git-ignored): what the GPU machine lacks for the
# device run, in at most 40 MiB. Runs here, on a CPU machine with network access to PyPI.
# Usage: benchmarks/device/prepare.sh            then: run.sh --dry-run here, run.sh on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv/bin/magnet-triton ]; then
    bash scripts/setup.sh
fi
PYTHON=${PYTHON:-.venv/bin/python}
KIT=benchmarks/device/kit
rm -rf "$KIT"
mkdir -p "$KIT/wheels"

echo "== the bundled tritonserver, trimmed for Python 3.12"
"$PYTHON" -m benchmarks.device.kit server --out "$KIT/server.tar.xz"

echo "== wheels for the GPU machine's Python 3.12 (what it lacks)"
read -r -a REQUIREMENTS <<< "$("$PYTHON" -c 'from benchmarks.device.packaging import DEVICE_REQUIREMENTS as r; print(" ".join(r))')"
"$PYTHON" -m pip download --quiet --dest "$KIT/wheels" --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any "${REQUIREMENTS[@]}"
# What the machine has of its own stays its own (its torch and OpenCV were built against its NumPy).
for name in $("$PYTHON" -c 'from benchmarks.device.packaging import MACHINE_OWN; print(" ".join(MACHINE_OWN))'); do
    rm -f "$KIT"/wheels/"$name"-*.whl
done
# pycuda has no wheels: its source is built there, against that machine's CUDA and driver.
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation --dest "$KIT/wheels" pycuda
# This package, as it is in the working tree now (setuptools would reuse a stale build/ otherwise).
rm -rf build
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$KIT/wheels" .

echo "== CPU results to compare the GPU class maps with"
"$PYTHON" -m benchmarks.device.kit cpu-results --out "$KIT/cpu_results"

"$PYTHON" -m benchmarks.device.kit manifest --kit "$KIT"
