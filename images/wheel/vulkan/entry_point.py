"""Installed as tvm_factory_vulkan/__init__.py by build.sh, beside libtvm_vulkan_codegen.so.

The apache-tvm wheel is built without Vulkan. The package's entry point in the group
"tvm.backends" makes `import tvm` call _autoload() after it has loaded its own backends (the
Vulkan runtime, libtvm_runtime_vulkan.so in tvm/lib, is loaded by the wheel's tvm.backend.vulkan).
TVM turns an exception raised here into a warning, so a broken install shows at `import tvm`.
"""

import ctypes
from pathlib import Path


def _autoload() -> None:
    from tvm.base import _LOADED_LIBS, _RUNTIME_ONLY  # pylint: disable=import-outside-toplevel

    # The codegen links libtvm_compiler.so, which a runtime-only TVM does not load.
    if _RUNTIME_ONLY or "tvm_vulkan_codegen" in _LOADED_LIBS:
        return
    path = Path(__file__).resolve().parent / "libtvm_vulkan_codegen.so"
    # Registration happens in the library's static initialisers; nothing is looked up by name.
    _LOADED_LIBS["tvm_vulkan_codegen"] = ctypes.CDLL(str(path), ctypes.RTLD_LOCAL)
