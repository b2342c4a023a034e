#!/usr/bin/env bash
# A Debian base image for Dockerfile.cpu where no image registry is reachable (the apt mirror must be):
#   deploy/docker/make-base.sh [TAG]          (default local/debian-python:bookworm; run as root)
#   BASE=local/debian-python:bookworm deploy/docker/build.sh
# debootstrap writes a minimal Debian into ROOTFS (a new temporary folder unless given; an existing one
# is completed, not rebuilt), and `docker import` makes it an image.
#
# The Python-backend stub links against libpython3.X.so, which Debian ships apart from the interpreter
# (package libpython3.X); without it every stub fails to start and the server never becomes ready. Its
# version must be the one build.sh's wheels were built for (bookworm: 3.11; check `$PYTHON -V`).
set -euo pipefail
TAG=${1:-local/debian-python:bookworm}
SUITE=${SUITE:-bookworm}
PYVER=${PYVER:-3.11}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOTFS=${ROOTFS:-$(mktemp -d)}
# libtcmalloc-minimal4: for `serve --allocator tcmalloc` (Triton's containers ship it too).
PACKAGES="python3,python3-venv,libpython${PYVER},ca-certificates,libtcmalloc-minimal4"
if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR"
else
    chroot "$ROOTFS" apt-get update -qq
    chroot "$ROOTFS" apt-get install -y -qq --no-install-recommends ${PACKAGES//,/ }
fi
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/*
test -e "$ROOTFS/usr/lib/x86_64-linux-gnu/libpython${PYVER}.so.1.0" -o -e "$ROOTFS/usr/lib/aarch64-linux-gnu/libpython${PYVER}.so.1.0" \
    || { echo "libpython${PYVER}.so.1.0 missing from $ROOTFS" >&2; exit 1; }
tar -C "$ROOTFS" -c . | docker import - "$TAG"
echo "imported $TAG from $ROOTFS"
