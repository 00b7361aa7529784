#!/usr/bin/env bash
# Regenerate the wheel toolchain's hashed lock from requirements.in (Linux x86_64,
# Python 3.11: Debian bookworm's python3). The CPU torch wheel is not on PyPI: on a
# connected machine pass its index, e.g. PYTORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu;
# offline, a folder that holds the wheel: WHEEL_FIND_LINKS=/opt/wheels.
set -euo pipefail
cd "$(dirname "$0")"
sources=()
if [ -n "${PYTORCH_CPU_INDEX:-}" ]; then sources+=(--extra-index-url "$PYTORCH_CPU_INDEX"); fi
if [ -n "${WHEEL_FIND_LINKS:-}" ]; then sources+=(--find-links "$WHEEL_FIND_LINKS"); fi
{
    echo "# Hashed lock for the wheel toolchain (Linux x86_64, Python 3.11); regenerate with images/wheel/relock.sh"
    uv pip compile --quiet --python-platform x86_64-manylinux_2_28 --python-version 3.11 \
        --generate-hashes --no-header --index-strategy unsafe-best-match "${sources[@]}" requirements.in
} > requirements.lock.tmp
mv requirements.lock.tmp requirements.lock
