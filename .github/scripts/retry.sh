#!/usr/bin/env bash
# Run a command up to N times with growing pauses: for steps that talk to the
# network on hosted runners. Safe for factory commands, which are idempotent
# (builds are cached by key, publishes upload only what is missing).
# The last attempt's exit status is this script's: a command that keeps failing fails the step.
# Usage: retry.sh ATTEMPTS COMMAND [ARG...]   (RETRY_PAUSE: seconds per attempt, default 30)
set -euo pipefail
attempts="$1"
shift
pause="${RETRY_PAUSE:-30}"
for ((n = 1; n <= attempts; n++)); do
    # Not `if "$@"; then`: after an if whose test failed, $? is 0, which hid every failure.
    status=0
    "$@" || status=$?
    if ((status == 0)); then
        exit 0
    fi
    if ((n == attempts)); then
        echo "retry: '$1' failed ${attempts} times (last exit ${status})" >&2
        exit "$status"
    fi
    echo "retry: '$1' exited ${status}; attempt $((n + 1)) of ${attempts} in $((n * pause)) s" >&2
    sleep $((n * pause))
done
