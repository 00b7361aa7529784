#!/bin/bash
# WebGPU beside the apache-tvm wheel (USE_WEBGPU=ON): what `mlc_llm compile --device webgpu`
# links into a model's .wasm, and TVM's JavaScript runtime that loads it in a browser, all
# built with Debian's emscripten from the sources of the wheel's own commit.
# Usage (as root, in the image): build.sh TVM_SRC_DIR TVM_FFI_SRC_DIR MLC_LLM_DIR OUT_DIR
#   TVM_SRC_DIR needs include/, src/, web/ and 3rdparty/compiler-rt; TVM_FFI_SRC_DIR include/ and
#   src/ (wasm_runtime.cc compiles tvm-ffi's sources in, from TVM's 3rdparty/tvm-ffi);
#   MLC_LLM_DIR web/emcc/ (mlc-llm refuses to link a .wasm without its mlc_wasm_runtime.bc).
# Writes OUT_DIR/tvm/web/dist/wasm/*.bc (OUT_DIR/tvm is compile's TVM_HOME),
# MLC_LLM_DIR/web/dist/wasm/mlc_wasm_runtime.bc (MLC_LLM_SOURCE_DIR) and OUT_DIR/tvmjs.js
# (TVM's JS runtime as one browser script, global `tvmjs`). README.md says why each step is so.
set -euo pipefail

tvm="$(realpath "$1")"
ffi="$(realpath "$2")"
mlc="$(realpath "$3")"
out="$4"
site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
[ -e "${tvm}/3rdparty/tvm-ffi" ] || ln -s "${ffi}" "${tvm}/3rdparty/tvm-ffi"

# TVM's web/Makefile flags. dlpack comes from the installed tvm_ffi (the tvm-ffi archive has none).
cflags=(-O3 -std=c++17 -Wno-ignored-attributes -I"${tvm}" -I"${tvm}/include" -I"${ffi}/include"
        -I"${site}/tvm_ffi/3rdparty/dlpack/include" -I"${tvm}/3rdparty/compiler-rt")
objects="${out}/tvm/web/dist/wasm"
mkdir -p "${objects}" "${mlc}/web/dist/wasm"
# One emcc per object, in parallel: wasm_runtime.cc (all of TVM's runtime) takes minutes.
# Compiled to wasm objects under the .bc names TVM and mlc-llm look up, not to LLVM bitcode:
# with bitcode every model's link ran code generation for the whole runtime again (LTO),
# 101 s of a link that now takes 49 s.
for name in wasm_runtime tvmjs_support webgpu_runtime; do
  echo "-o ${objects}/${name}.bc ${tvm}/web/emcc/${name}.cc"
done > "${work}/jobs"
echo "-o ${mlc}/web/dist/wasm/mlc_wasm_runtime.bc ${mlc}/web/emcc/mlc_wasm_runtime.cc" >> "${work}/jobs"
xargs -P "$(nproc)" -n 3 emcc "${cflags[@]}" -c < "${work}/jobs"

# The JS runtime: emscripten's glue for the three objects (the link's .wasm is not used: each
# model's .wasm carries the runtime), made an ES module by TVM's decorate_as_wasi.py, then
# TVM's TypeScript bundled by esbuild into one script. Upstream bundles with rollup from npm;
# esbuild is in Debian, and the page the gate runs gets the same logits with either.
# The link runs at -O1, not the Makefile's -O3: with ASYNCIFY, -O3 spent 6.5 minutes in
# wasm-opt on the .wasm nobody uses, against 21 s. The glue keeps the same imports and
# Asyncify code; -O1 only skips the JS minifier's dead-code pass (unused helpers stay in).
cp -r "${tvm}/web" "${work}/web"
emcc "${cflags[@]}" -O1 -o "${work}/web/tvmjs_runtime.js" "${objects}"/{wasm_runtime,tvmjs_support,webgpu_runtime}.bc \
  --no-entry -s WASM_BIGINT=1 -s ALLOW_MEMORY_GROWTH=1 -s STANDALONE_WASM=1 -s ERROR_ON_UNDEFINED_SYMBOLS=0 \
  --pre-js "${tvm}/web/emcc/preload.js" -s ASYNCIFY=1
python3 "${tvm}/web/emcc/decorate_as_wasi.py" "${work}/web/tvmjs_runtime.js" "${work}/web/src/tvmjs_runtime_wasi.js" es
# Node-only modules stay external: the browser code paths never require them.
esbuild "${work}/web/src/index.ts" --bundle --format=iife --global-name=tvmjs --platform=browser \
  --external:fs --external:path --external:crypto --external:ws --external:perf_hooks \
  --log-level=warning --outfile="${out}/tvmjs.js"
test -s "${out}/tvmjs.js"
