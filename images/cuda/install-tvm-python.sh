#!/usr/bin/env bash
# Install the Python package of a built TVM checkout, the way that checkout
# packages it; extra arguments go to pip (e.g. --no-deps):
#
#   bash install-tvm-python.sh /opt/src/tvm [PIP_ARG...]
#
# TVM up to mid-2025 (the legacy pin's relax) ships python/setup.py, which finds
# the libraries through TVM_LIBRARY_PATH. apache/tvm removed it in September 2025
# (e56d4b2678): the package is built from the root pyproject.toml by
# scikit-build-core, reusing the CMake tree in build/, and the FFI layer is its
# own package under 3rdparty/tvm-ffi, installed first.
set -euo pipefail

tvm="${1:?usage: install-tvm-python.sh TVM_DIR [PIP_ARG...]}"
shift
if [[ -f "$tvm/python/setup.py" ]]; then
    TVM_LIBRARY_PATH="$tvm/build" pip install "$@" "$tvm/python"
elif [[ -f "$tvm/pyproject.toml" ]]; then
    if [[ -d "$tvm/3rdparty/tvm-ffi" ]]; then
        pip install "$@" "$tvm/3rdparty/tvm-ffi"
    fi
    pip install "$@" "$tvm"
else
    echo "install-tvm-python.sh: $tvm has neither python/setup.py nor pyproject.toml" >&2
    exit 1
fi
