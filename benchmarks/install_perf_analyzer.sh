#!/usr/bin/env bash
# Install a perf_analyzer that runs outside NVIDIA's containers, on Linux x86-64 with glibc >= 2.34
# (Debian 12 has 2.36).
#
# Why this way: tritonclient wheels up to 2.60 ship perf_analyzer under bin/, but the 2.51..2.60 builds
# need glibc 2.38. The 2.50.0 build needs only glibc 2.34 and GLIBCXX_3.4.30 (GCC 12's libstdc++), plus
# two libraries Debian 12 lacks by default: libb64.so.0d (Debian package libb64-0d) and libcudart.so.12
# (pip package nvidia-cuda-runtime-cu12; loaded at start even with no GPU). We take the binary out of the
# 2.50.0 wheel instead of installing that wheel, so the project's own (newer) tritonclient stays as is.
#
# Layout under PREFIX (default: benchmarks/.tools/perf_analyzer next to this script):
#   bin/perf_analyzer       wrapper that puts lib/ on LD_LIBRARY_PATH and execs the real binary
#   libexec/perf_analyzer   the binary from tritonclient 2.50.0
#   lib/libcudart.so.12     from nvidia-cuda-runtime-cu12
#
# Usage: benchmarks/install_perf_analyzer.sh [--prefix DIR] [--force]
# Environment: PYTHON (an interpreter with pip; default python3), MAGNET_PERF_ANALYZER_PREFIX.
# Needs root or sudo only when libb64-0d is missing. Running it again does nothing once installed.
set -euo pipefail

TRITONCLIENT_VERSION=2.50.0
# CUDA 12.6 is what Triton 24.09 (= tritonclient 2.50) was built against; any 12.x libcudart works.
CUDART_VERSION=12.6.77
MIN_GLIBC=2.34

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=${MAGNET_PERF_ANALYZER_PREFIX:-$script_dir/.tools/perf_analyzer}
force=0
python=${PYTHON:-python3}

log() { echo "install_perf_analyzer: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --prefix)
            [[ $# -ge 2 ]] || die "--prefix needs a directory"
            prefix=$2
            shift 2
            ;;
        --force)
            force=1
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
wrapper=$prefix/bin/perf_analyzer

# perf_analyzer 2.50 has no --help (it prints usage and exits 99), but --version exits 0.
works() { "$wrapper" --version >/dev/null 2>&1; }

if [[ $force -eq 0 && -x $wrapper ]] && works; then
    log "already installed: $wrapper"
    echo "$wrapper"
    exit 0
fi

# --- the host -------------------------------------------------------------------------------------
[[ $(uname -s) == Linux && $(uname -m) == x86_64 ]] ||
    die "the tritonclient $TRITONCLIENT_VERSION wheel ships perf_analyzer for Linux x86-64 only, this is $(uname -s) $(uname -m)"
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}') || true
[[ -n $glibc ]] || die "cannot tell the glibc version (getconf GNU_LIBC_VERSION); a glibc-based distribution is required"
if [[ $(printf '%s\n%s\n' "$MIN_GLIBC" "$glibc" | sort -V | head -1) != "$MIN_GLIBC" ]]; then
    die "glibc $glibc is too old: perf_analyzer $TRITONCLIENT_VERSION needs glibc >= $MIN_GLIBC (Debian 12, Ubuntu 22.04 or newer)"
fi
"$python" -m pip --version >/dev/null 2>&1 ||
    die "$python has no pip; set PYTHON to an interpreter with pip (e.g. the project's .venv/bin/python)"

# --- Debian's libb64 ------------------------------------------------------------------------------
has_libb64() {
    # ldconfig lives in /sbin, which is not on a normal user's PATH on Debian.
    { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libb64\.so\.0d '
}
if has_libb64; then
    log "libb64.so.0d present"
else
    command -v apt-get >/dev/null ||
        die "libb64.so.0d is missing and there is no apt-get; install your distribution's libb64 (b64 1.2) by hand"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "libb64-0d must be installed as root: run 'apt-get install libb64-0d' as root, then this script again"
        sudo=(sudo)
    fi
    log "installing libb64-0d with apt-get"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libb64-0d >/dev/null
    has_libb64 || die "apt-get installed libb64-0d but libb64.so.0d is still not found by ldconfig"
fi

# --- the two wheels -------------------------------------------------------------------------------
downloads=$(mktemp -d)
trap 'rm -rf "$downloads"' EXIT
log "downloading tritonclient==$TRITONCLIENT_VERSION and nvidia-cuda-runtime-cu12==$CUDART_VERSION (no install)"
# --platform/--only-binary pick the manylinux x86-64 wheels whatever the interpreter's own tags are.
"$python" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --dest "$downloads" \
    "tritonclient==$TRITONCLIENT_VERSION" "nvidia-cuda-runtime-cu12==$CUDART_VERSION"

# A wheel is a zip; Python's zipfile avoids depending on unzip. Copies only the one member we need.
extract() { # wheel-glob member destination
    "$python" - "$downloads" "$1" "$2" "$3" <<'EOF'
import glob, os, shutil, sys, zipfile
folder, pattern, member, dest = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(folder, pattern))
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
os.chmod(dest + ".part", 0o755)
os.replace(dest + ".part", dest)
EOF
}
mkdir -p "$prefix/bin" "$prefix/libexec" "$prefix/lib"
extract "tritonclient-$TRITONCLIENT_VERSION-*.whl" "tritonclient-$TRITONCLIENT_VERSION.data/data/bin/perf_analyzer" \
    "$prefix/libexec/perf_analyzer"
extract "nvidia_cuda_runtime_cu12-$CUDART_VERSION-*.whl" nvidia/cuda_runtime/lib/libcudart.so.12 \
    "$prefix/lib/libcudart.so.12"

# The wrapper finds its folder at run time, so the prefix can be moved or symlinked into PATH.
cat >"$wrapper.part" <<'EOF'
#!/bin/sh
# perf_analyzer from tritonclient 2.50.0 with its libcudart.so.12; written by install_perf_analyzer.sh.
here=$(dirname "$(readlink -f "$0")")/..
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/libexec/perf_analyzer" "$@"
EOF
chmod 755 "$wrapper.part"
mv "$wrapper.part" "$wrapper"

# --- check ----------------------------------------------------------------------------------------
if ! works; then
    missing=$(LD_LIBRARY_PATH="$prefix/lib" ldd "$prefix/libexec/perf_analyzer" 2>&1 | grep 'not found' || true)
    die "the installed perf_analyzer does not start${missing:+; missing libraries:
$missing}"
fi
log "installed $("$wrapper" --version 2>&1 | tr -s ' ' | head -1) ($(du -sh "$prefix" | cut -f1)) under $prefix"
log "use it as $wrapper, or add $prefix/bin to PATH"
echo "$wrapper"
