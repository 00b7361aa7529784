#!/usr/bin/env bash
# Run a command up to N times with growing pauses: for steps that talk to the
# network on hosted runners. Safe for factory commands, which are idempotent
# (builds are cached by key, publishes upload only what is missing).
# Usage: retry.sh ATTEMPTS COMMAND [ARG...]
set -euo pipefail
attempts="$1"
shift
for ((n = 1; n <= attempts; n++)); do
    if "$@"; then
        exit 0
    fi
    status=$?
    if ((n == attempts)); then
        echo "retry: '$1' failed ${attempts} times (last exit ${status})" >&2
        exit "$status"
    fi
    echo "retry: '$1' exited ${status}; attempt $((n + 1)) of ${attempts} in $((n * 30)) s" >&2
    sleep $((n * 30))
done
