#!/bin/bash
# The commas are -Wl,... linker flags, and '$ORIGIN' is for the dynamic loader, not the shell.
# shellcheck disable=SC2054,SC2016
# Adds Vulkan to the apache-tvm wheel in the venv on PATH (the wheel is built with USE_VULKAN=OFF):
# TVM's Vulkan runtime and SPIR-V codegen, compiled from the sources of the wheel's own commit.
# Usage (as root, in the image): build.sh TVM_SRC_DIR TVM_FFI_SRC_DIR
#   TVM_SRC_DIR needs include/ and src/; TVM_FFI_SRC_DIR (TVM's 3rdparty/tvm-ffi commit) include/.
# Apply the toolchain's TVM patches (tvm-spirv-bool-buffers.patch) to TVM_SRC_DIR first.
# Debian packages: see README.md.
set -euo pipefail

tvm="$(realpath "$1")"
ffi="$(realpath "$2")"
here="$(dirname "$(realpath "$0")")"
site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
version="$(python -c 'import importlib.metadata as m; print(m.version("apache-tvm"))')"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

# -fvisibility=hidden as upstream: the libraries export nothing, they register at load time.
# tvm/ffi headers come from TVM's own tvm-ffi commit (the installed apache-tvm-ffi's headers do
# not compile against TVM 0.26.0); only dlpack is taken from the installed tvm_ffi.
# TVM_ENABLE_SPIRV turns on the SPIRV-Tools half of spirv_utils.cc (the runtime ignores it).
cat > "${work}/flags" <<EOF
-std=c++20 -O2 -fPIC -fvisibility=hidden -DNDEBUG -DTVM_ENABLE_SPIRV=1
-I${tvm}/include -I${tvm}/src -I${ffi}/include -I${site}/tvm_ffi/3rdparty/dlpack/include
-isystem /usr/include/spirv/unified1 -isystem /usr/include/spirv-tools
EOF

# The codegen leaves out target_kind.cc: the wheel registers the "vulkan" target kind already,
# and vulkan_plugin.cc does the rest of what that file does.
runtime=("${tvm}"/src/backend/vulkan/runtime/*.cc)
codegen=("${here}/vulkan_plugin.cc")
for src in "${tvm}"/src/backend/vulkan/codegen/*.cc; do
  [[ "${src}" == */target_kind.cc ]] || codegen+=("${src}")
done
for src in "${runtime[@]}"; do echo "${src} -o ${work}/rt-$(basename "${src%.cc}").o"; done > "${work}/jobs"
for src in "${codegen[@]}"; do echo "${src} -o ${work}/cg-$(basename "${src%.cc}").o"; done >> "${work}/jobs"
xargs -P "$(nproc)" -n 3 g++ "@${work}/flags" -c < "${work}/jobs"

# --no-undefined: a symbol the wheel hides fails the build here, not at `import tvm`.
# The wheel's own libraries have RUNPATH $ORIGIN and find libtvm_ffi.so already loaded by
# Python; ours also name its folder so that ldd resolves everything.
lib="${site}/tvm/lib"
ldflags=(-shared -Wl,--no-undefined -Wl,--as-needed -L"${lib}" -L"${site}/tvm_ffi/lib")
g++ "${ldflags[@]}" -o "${lib}/libtvm_runtime_vulkan.so" "${work}"/rt-*.o \
  -Wl,-rpath,'$ORIGIN:$ORIGIN/../../tvm_ffi/lib' -ltvm_runtime -ltvm_ffi -lvulkan

# SPIRV-Tools is linked statically and kept private (--exclude-libs) so that only libvulkan1
# and Mesa are needed at run time.
pkg="${site}/tvm_factory_vulkan"
install -d "${pkg}" "${site}/tvm_factory_vulkan-${version}.dist-info"
g++ "${ldflags[@]}" -o "${pkg}/libtvm_vulkan_codegen.so" "${work}"/cg-*.o \
  -Wl,-rpath,'$ORIGIN/../tvm/lib:$ORIGIN/../tvm_ffi/lib' -ltvm_compiler -ltvm_runtime -ltvm_ffi \
  -Wl,--exclude-libs,ALL -l:libSPIRV-Tools.a
install -m 644 "${here}/entry_point.py" "${pkg}/__init__.py"

# A minimal installed distribution: importlib.metadata finds its entry point in "tvm.backends",
# which `import tvm` calls (tvm/backend/_autoload_backends.py); pip can list and remove it.
cd "${site}"
printf 'Metadata-Version: 2.1\nName: tvm-factory-vulkan\nVersion: %s\nSummary: %s\n' \
  "${version}" "Vulkan codegen for the apache-tvm wheel (factory images/wheel/vulkan)" \
  > "tvm_factory_vulkan-${version}.dist-info/METADATA"
printf '[tvm.backends]\nvulkan_codegen = tvm_factory_vulkan:_autoload\n' \
  > "tvm_factory_vulkan-${version}.dist-info/entry_points.txt"
echo factory > "tvm_factory_vulkan-${version}.dist-info/INSTALLER"
{ find tvm_factory_vulkan "tvm_factory_vulkan-${version}.dist-info" tvm/lib/libtvm_runtime_vulkan.so -type f
  echo "tvm_factory_vulkan-${version}.dist-info/RECORD"; } | sed 's/$/,,/' > "${work}/RECORD"
mv "${work}/RECORD" "tvm_factory_vulkan-${version}.dist-info/RECORD"
python -m compileall -q tvm_factory_vulkan
