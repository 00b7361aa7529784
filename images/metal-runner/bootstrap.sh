#!/usr/bin/env bash
# Install one toolchain natively on a macOS arm64 runner, into a prefix keyed by the
# toolchain's hash, reused by every later run with the same hash:
# - a wheel toolchain (TVM_WHEEL set, e.g. apache-tvm==0.26.0): the same hashed packages
#   as the Linux image (requirements-wheel.lock: apache-tvm's macOS arm64 wheel has the
#   Metal runtime and codegen), and mlc-llm's python/ at the pinned commit with the same
#   patches, without libmlc_llm. No compiler, about a minute;
# - a source toolchain: the pinned mlc-ai/relax (TVM) built with Metal and LLVM, then the
#   pinned mlc-llm against it.
#
# The pins arrive as the same variables the Linux image takes as build args
# (factory/toolchains/images/plan.py: PIN_ARGS); `factory images metal-env` prints them:
#
#   eval "$(factory images metal-env --matrix manifests/world.yaml --toolchain NAME)"
#   bash images/metal-runner/bootstrap.sh
#
# Needs: Xcode command line tools (Metal libraries are linked with xcrun), git and
# python${PYTHON_VERSION}; a source toolchain also cmake, ninja and LLVM (LLVM_CONFIG,
# default: Homebrew's llvm@15). MLC_LLM_SOURCE (an archive or checkout of the pinned
# commit) replaces the fetch from MLC_LLM_REPO for a wheel toolchain.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
: "${FACTORY_PREFIX_ROOT:?set FACTORY_PREFIX_ROOT (a cached folder, e.g. ~/.cache/factory/toolchains)}"
: "${TOOLCHAIN_HASH:?set TOOLCHAIN_HASH}"
TVM_WHEEL="${TVM_WHEEL:-}"
MLC_LLM_SOURCE="${MLC_LLM_SOURCE:-}"
: "${FLOW:?}" "${MLC_LLM_REPO:?}" "${MLC_LLM_COMMIT:?}"
if [[ -z "$TVM_WHEEL" ]]; then
    : "${TVM_REPO:?}" "${TVM_COMMIT:?}"
fi
TOKENIZERS_CPP_REPO="${TOKENIZERS_CPP_REPO:-}"
TOKENIZERS_CPP_COMMIT="${TOKENIZERS_CPP_COMMIT:-}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
PATCH_DIR="${PATCH_DIR:-}"
LLVM_CONFIG="${LLVM_CONFIG:-$(brew --prefix llvm@15 2>/dev/null || echo /opt/homebrew/opt/llvm@15)/bin/llvm-config}"
jobs="$(sysctl -n hw.ncpu 2>/dev/null || nproc)"

prefix="${FACTORY_PREFIX_ROOT}/${TOOLCHAIN_HASH}"
ready="${prefix}/.factory-ready"
if [[ -f "$ready" ]]; then
    echo "toolchain ${TOOLCHAIN_HASH} already built in ${prefix}; reusing it"
    exit 0
fi

# One builder per hash at a time; a prefix without the ready mark is an
# interrupted build and is started again from scratch (venvs are not relocatable,
# so the prefix is built in place and the mark is written last).
mkdir -p "$FACTORY_PREFIX_ROOT"
lock="${prefix}.lock"
if ! mkdir "$lock" 2>/dev/null; then
    echo "another build of ${TOOLCHAIN_HASH} holds ${lock}; remove it if no build is running" >&2
    exit 1
fi
trap 'rm -rf "$lock"' EXIT
rm -rf "$prefix"
mkdir -p "$prefix/src"

checkout() { # checkout REPO COMMIT DIR
    git init -q "$3"
    git -C "$3" fetch -q --depth 1 "$1" "$2"
    git -C "$3" checkout -q FETCH_HEAD
    git -C "$3" submodule update -q --init --recursive --depth 1
}

apply_patches() { # apply_patches KIND DIR
    [[ -n "$PATCH_DIR" && -d "$PATCH_DIR/$1" ]] || return 0
    local patch
    for patch in "$PATCH_DIR/$1"/*.patch; do
        [[ -e "$patch" ]] || continue
        git -C "$2" apply "$patch"
    done
}

cmake_config() { # cmake_config FILE NAME VALUE...
    local file="$1"
    shift
    : > "$file"
    while (($#)); do
        printf 'set(%s %s)\n' "$1" "$2" >> "$file"
        shift 2
    done
}

finish() { # the pins and the ready mark, written last
    env | grep -E '^(FLOW|TVM_|MLC_LLM_|TOKENIZERS_CPP_|PYTHON_VERSION|TOOLCHAIN)' | sort > "$prefix/pins.env"
    date -u +%Y-%m-%dT%H:%M:%SZ > "$ready"
    echo "toolchain ${TOOLCHAIN_HASH} ready in ${prefix}"
}

if [[ -n "$TVM_WHEEL" ]]; then
    echo "== python ${PYTHON_VERSION} venv with the wheel toolchain's locked packages (${TVM_WHEEL})"
    "python${PYTHON_VERSION}" -m venv "$prefix/venv"
    # shellcheck disable=SC1091
    source "$prefix/venv/bin/activate"
    pip install --quiet --require-hashes -r "$here/requirements-wheel.lock"
    installed="apache-tvm==$(python -c 'import importlib.metadata as m; print(m.version("apache-tvm"))')"
    if [[ "$installed" != "$TVM_WHEEL" ]]; then
        echo "the manifest pins ${TVM_WHEEL}, requirements-wheel.lock installs ${installed}: make them agree" >&2
        exit 1
    fi
    echo "== mlc-llm ${MLC_LLM_COMMIT} python/ with the toolchain's patches (no libmlc_llm)"
    mlc="$prefix/src/mlc-llm"
    if [[ -f "$MLC_LLM_SOURCE" ]]; then
        mkdir -p "$mlc"
        tar -xzf "$MLC_LLM_SOURCE" -C "$mlc" --strip-components=1
    elif [[ -d "$MLC_LLM_SOURCE" ]]; then
        cp -R "$MLC_LLM_SOURCE" "$mlc"
    else
        checkout "$MLC_LLM_REPO" "$MLC_LLM_COMMIT" "$mlc"
    fi
    apply_patches mlc-llm "$mlc"
    site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$mlc/python" > "$site/mlc_llm.pth"
    printf '#!/bin/sh\nexec python -m mlc_llm "$@"\n' > "$prefix/venv/bin/mlc_llm"
    chmod 755 "$prefix/venv/bin/mlc_llm"
    # What the host runner adds to each step's environment (factory/runners/host.py).
    echo "SKIP_LOADING_MLCLLM_SO=1" > "$prefix/runner.env"
    SKIP_LOADING_MLCLLM_SO=1 python -c "import mlc_llm.cli.compile, tvm; assert tvm.get_global_func('target.build.metal')"
    finish
    exit 0
fi

echo "== python ${PYTHON_VERSION} venv with the locked ${FLOW} requirements"
"python${PYTHON_VERSION}" -m venv "$prefix/venv"
# shellcheck disable=SC1091
source "$prefix/venv/bin/activate"
pip install --quiet --require-hashes -r "$here/requirements-${FLOW}.lock"

echo "== TVM (mlc-ai/relax ${TVM_COMMIT}) with Metal and LLVM"
tvm="$prefix/src/tvm"
checkout "$TVM_REPO" "$TVM_COMMIT" "$tvm"
apply_patches tvm "$tvm"
mkdir -p "$tvm/build"
cmake_config "$tvm/build/config.cmake" USE_METAL ON USE_CUDA OFF USE_VULKAN OFF USE_OPENCL OFF \
    USE_LLVM "\"${LLVM_CONFIG} --ignore-libllvm --link-static\"" HIDE_PRIVATE_SYMBOLS ON \
    CMAKE_BUILD_TYPE RelWithDebInfo
cmake -S "$tvm" -B "$tvm/build" -G Ninja
cmake --build "$tvm/build" --parallel "$jobs"
# python/setup.py at the legacy pin; the root pyproject.toml (and 3rdparty/tvm-ffi) at the current one.
bash "$here/../cuda/install-tvm-python.sh" "$tvm" --quiet --no-deps

echo "== mlc-llm ${MLC_LLM_COMMIT} (${FLOW} flow) against that TVM"
mlc="$prefix/src/mlc-llm"
checkout "$MLC_LLM_REPO" "$MLC_LLM_COMMIT" "$mlc"
if [[ -n "$TOKENIZERS_CPP_COMMIT" ]]; then
    git -C "$mlc/3rdparty/tokenizers-cpp" fetch -q --depth 1 "$TOKENIZERS_CPP_REPO" "$TOKENIZERS_CPP_COMMIT"
    git -C "$mlc/3rdparty/tokenizers-cpp" checkout -q FETCH_HEAD
    git -C "$mlc/3rdparty/tokenizers-cpp" submodule update -q --init --recursive --depth 1
fi
apply_patches mlc-llm "$mlc"
apply_patches tokenizers-cpp "$mlc/3rdparty/tokenizers-cpp"
mkdir -p "$mlc/build"
# The legacy generation's CMake reads TVM_HOME, the current one TVM_SOURCE_DIR.
if [[ "$FLOW" == legacy ]]; then tvm_var=TVM_HOME; else tvm_var=TVM_SOURCE_DIR; fi
cmake_config "$mlc/build/config.cmake" "$tvm_var" "$tvm" USE_METAL ON USE_CUDA OFF USE_VULKAN OFF \
    USE_OPENCL OFF CMAKE_BUILD_TYPE RelWithDebInfo
cmake -S "$mlc" -B "$mlc/build" -G Ninja
cmake --build "$mlc/build" --parallel "$jobs"
if [[ "$FLOW" == legacy ]]; then
    pip install --quiet --no-deps "$mlc/python" "$mlc"
    python -c "import mlc_llm.build, mlc_chat"
else
    pip install --quiet --no-deps "$mlc/python"
    mlc_llm --help > /dev/null
fi

finish
