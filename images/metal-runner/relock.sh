#!/usr/bin/env bash
# Regenerate the hashed Python locks of the macOS arm64 runner from the .in files.
# Runs anywhere (uv resolves for another platform): bash images/metal-runner/relock.sh
# macOS 14 is the oldest the locks resolve for: torch 2.13 ships macosx_14_0_arm64 wheels
# only, and GitHub's arm64 runners (macos-14 and later) have it.
set -euo pipefail
cd "$(dirname "$0")"
export MACOSX_DEPLOYMENT_TARGET=14.0
for generation in legacy current wheel; do
    {
        echo "# Hashed lock for macOS arm64, Python 3.11; regenerate with images/metal-runner/relock.sh"
        uv pip compile --quiet --python-platform aarch64-apple-darwin --python-version 3.11 \
            --generate-hashes --no-header "requirements-${generation}.in"
    } > "requirements-${generation}.lock.tmp"
    mv "requirements-${generation}.lock.tmp" "requirements-${generation}.lock"
done
