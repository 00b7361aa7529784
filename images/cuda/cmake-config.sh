#!/usr/bin/env bash
# Print the config.cmake of one build stage of the toolchain image, from the
# build args in the environment (factory/toolchains/images/plan.py: PIN_ARGS):
#
#   bash cmake-config.sh tvm|mlc-legacy|mlc-current > build/config.cmake
#
# TVM's CMake reads build/config.cmake, and so does the copy of TVM that
# mlc-llm's CMake adds as a subdirectory, so every stage gets the same switches.
# CMAKE_CUDA_ARCHITECTURES names the CUDA archs of the toolchain's targets:
# left unset, CMake compiles TVM's CUDA sources (CUTLASS, flash-attention) for
# nvcc's default arch only, and TVM of 2026 builds its sm90 CUTLASS kernels only
# when "90a" is listed. Upstream's own builds always set it.
set -euo pipefail

stage="${1:?usage: cmake-config.sh tvm|mlc-legacy|mlc-current}"
tvm_source="${TVM_SOURCE:-/opt/src/tvm}"
llvm_config="${LLVM_CONFIG:-/usr/lib/llvm-15/bin/llvm-config}"

line() { printf 'set(%s %s)\n' "$1" "$2"; }

case "$stage" in
    tvm)
        if [[ "${USE_LLVM:-OFF}" == ON ]]; then
            line USE_LLVM "\"${llvm_config} --ignore-libllvm --link-static\""
        else
            line USE_LLVM OFF
        fi
        line HIDE_PRIVATE_SYMBOLS ON
        ;;
    mlc-legacy) line TVM_HOME "$tvm_source" ;;       # the legacy generation's CMake reads TVM_HOME
    mlc-current) line TVM_SOURCE_DIR "$tvm_source" ;; # the current one reads TVM_SOURCE_DIR
    *)
        echo "cmake-config.sh: unknown stage '$stage'" >&2
        exit 2
        ;;
esac
line CMAKE_BUILD_TYPE RelWithDebInfo
for switch in USE_CUDA USE_CUTLASS USE_CUBLAS USE_VULKAN; do
    line "$switch" "${!switch:-OFF}"
done
line USE_METAL OFF
line USE_OPENCL OFF
if [[ "${USE_CUDA:-OFF}" == ON ]]; then
    if [[ -z "${CUDA_ARCHITECTURES:-}" ]]; then
        echo "cmake-config.sh: USE_CUDA is ON but CUDA_ARCHITECTURES is empty; give the toolchain a CUDA target" \
            "(or set build.cuda: false)" >&2
        exit 1
    fi
    line CMAKE_CUDA_ARCHITECTURES "\"${CUDA_ARCHITECTURES}\""
fi
