#!/usr/bin/env bash
# Make the local base image the Docker tests build on, once: no registry is
# reachable here, so it comes from debootstrap (Debian's mirror) + docker import.
# Usage: make-base-image.sh [IMAGE]   (default factory-test/debian-python:bookworm)
set -euo pipefail

image="${1:-factory-test/debian-python:bookworm}"
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image already present"
    exit 0
fi
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
# python3 and g++: the conformance toolchain installs TVM wheels and links TVM libraries.
debootstrap --variant=minbase --include=python3,python3-venv,g++,ca-certificates \
    bookworm "$rootfs" >/dev/null
tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
echo "made base image $image"
