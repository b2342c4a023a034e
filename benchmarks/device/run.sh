#!/usr/bin/env bash
# The device run on the lent GPU machine: installs the kit, builds pycuda, runs the gpu tests, exports the
# GPU repositories (torch engine, FP32 and FP16), serves them with the carried tritonserver, measures
# them over gRPC, times the pipeline in process, and writes $OUT/results.json and $OUT/run.log.
# With --dry-run it rehearses every step a CPU machine can, here.
# Usage: benchmarks/device/prepare.sh && benchmarks/device/run.sh --dry-run      (here)
#        OUT=... benchmarks/device/run.sh                                       (there, within 9 minutes)
# Each stage has its own timeout (150 + 90 + 240 + 30 s, about 8.5 minutes with the installs), and the
# results are saved after every step, so a stage that runs out still leaves what it measured.
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=benchmarks/device/kit
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
[ -f "$KIT/manifest.json" ] || { echo "no kit: run benchmarks/device/prepare.sh first"; exit 1; }

if [ "${1:-}" = "--dry-run" ]; then
    PYTHON=${PYTHON:-.venv/bin/python}
    exec "$PYTHON" -m benchmarks.device.kit run --dry-run --out "$OUT"
fi

echo "== the machine"
python3 --version
if ldconfig -p | grep -q 'libpython3\.12\.so\.1\.0'; then
    echo "libpython3.12.so.1.0: found"
else
    echo "libpython3.12.so.1.0: NOT FOUND: the server's Python 3.12 stub cannot start without it"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

echo "== install (offline, from the kit, beside the machine's own packages)"
REPO=$PWD
SCRATCH=${TMPDIR:-/tmp}/magnet-device
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH/app"
SITE="$SCRATCH/site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$KIT"/wheels/*.whl
CUDA_ROOT=$(dirname "$(dirname "$(command -v nvcc)")") timeout 150 \
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" \
    "$KIT"/wheels/pycuda-*.tar.gz \
    || echo "pycuda did not build: the kernels fall back to their PyTorch twins"
export PYTHONPATH="$SITE"
# The package runs from its wheel: the source tree's magnet_triton/ (without export/, client/, ...) must
# not shadow it, so the benchmarks and tests run from a copy, with ../shared beside it as here.
cp -r benchmarks tests pyproject.toml "$SCRATCH/app/"
[ -d "$REPO/../shared" ] && ln -s "$(cd "$REPO/.." && pwd)/shared" "$SCRATCH/shared"
tar -xJf "$KIT/server.tar.xz" -C "$SCRATCH"
export MAGNET_TRITONSERVER_ROOT="$SCRATCH/server/pytriton/tritonserver"
cd "$SCRATCH/app"

echo "== gpu tests (kernels against their twins at full sizes, the torch engine)"
timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_kernels.py tests/test_torch_engine.py \
    || echo "gpu tests FAILED (see above)"

echo "== export, serve, measure"
status=0
timeout 240 python3 -m benchmarks.device.kit run --kit "$REPO/$KIT" --out "$OUT" || status=$?
timeout 30 python3 -m benchmarks.bench_kernels --reps 50 --warmup 5 > "$OUT/kernels.txt" 2>&1 || true
exit $status
