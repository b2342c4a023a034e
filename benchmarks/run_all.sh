#!/usr/bin/env bash
# The one command: perf_analyzer sweep and side-by-side table for a preset, on this machine.
#
# Sets up .venv if needed (scripts/setup.sh, plus the bench extra for the plot), installs perf_analyzer
# if missing (benchmarks/install_perf_analyzer.sh), exports a CPU model repository with seeded random
# weights, serves it once and runs benchmarks/run_all.py. Everything lands in runs/bench/<date>/<name>/:
#   summary.md, results.json        the tables, targets and where the time goes
#   perf_analyzer/*.csv, *.png      perf_analyzer CSVs (one per run, one per composing model) and the plot
#   repository/, export.log, server.log
#
# Usage: benchmarks/run_all.sh [--preset P] [--quick] [--extra-preset P2]... [--image IMG]
#                              [--out DIR] [--no-perf-analyzer]
#   --preset P         preset to export and measure (default: cityscapes-fast; cityscapes takes ~2 min
#                      per image on 2 cores, so its sweep takes long)
#   --extra-preset P2  also measure P2 side by side at concurrency 1 on the same server (it must differ
#                      from P only in mode/n_points/n_patches/patch_order, e.g. cityscapes next to
#                      cityscapes-fast); repeatable
#   --quick            fewer concurrency levels and requests (a smoke run, minutes)
#   --image IMG        a path, cityscapes, deepglobe or synthetic (default: the shared Cityscapes image
#                      in ../shared/data when present, else a synthetic 2048x1024 street scene)
set -euo pipefail
cd "$(dirname "$0")/.."

preset=cityscapes-fast
out=
quick=()
passthrough=()
perf=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --preset) preset=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --quick) quick=(--quick); shift ;;
        --extra-preset | --image) passthrough+=("$1" "$2"); shift 2 ;;
        --no-perf-analyzer) perf=0; passthrough+=("$1"); shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run_all.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ ! -x .venv/bin/magnet-triton ]]; then
    bash scripts/setup.sh
fi
. .venv/bin/activate
if ! python -c 'import matplotlib' 2>/dev/null; then
    # The plot needs matplotlib (the bench extra); the CSVs do not, so a failed install is not fatal.
    python -m pip install --quiet -e ".[bench]" || echo "run_all.sh: matplotlib unavailable, no plot" >&2
fi
if [[ $perf -eq 1 ]]; then
    PYTHON=.venv/bin/python bash benchmarks/install_perf_analyzer.sh >/dev/null
fi

name=$preset${quick:+-quick}
if [[ -z $out ]]; then
    base=runs/bench/$(date +%F)/$name
    out=$base
    n=2
    while [[ -e $out ]]; do  # never overwrite an earlier run of the day
        out=$base-$n
        n=$((n + 1))
    done
fi
mkdir -p "$out"
echo "run_all.sh: exporting $preset (random weights, seed 0) into $out/repository" >&2
magnet-triton export --preset "$preset" --random-weights 0 --out "$out/repository" >"$out/export.log" 2>&1 ||
    { tail -20 "$out/export.log" >&2; exit 1; }
python -m benchmarks.run_all --repository "$out/repository" --out "$out" -v "${quick[@]}" "${passthrough[@]}"
echo "run_all.sh: results in $out (summary.md, results.json, perf_analyzer/)" >&2
