"""Runs INSIDE a toolchain (its own TVM), not in the factory: a compile command for a
GPU target, with a check of every kernel it hands to TVM's TIR build.

    python kernel_check_script.py REPORT_JSON -- mlc_llm compile ARGS...
    python kernel_check_script.py REPORT_JSON -- python -m MODULE ARGS...

The command runs in this process with TVM's TIR build wrapped: before a module is
lowered, every PrimFunc meant for a GPU (CUDA, Vulkan, Metal, WebGPU, OpenCL, ROCm) is
walked, and two things are recorded by function name:

- blocks outside any thread binding: the scheduler left them for the host, which then
  runs them against device buffers (mlc-llm's LowBatchGemvSpecialize does this to
  RWKV-6's `x @ W` matmuls with TVM 0.26; CUDA compiles it without a word);
- global buffers read or written outside any thread binding: host code touching device
  memory. TVM's own VerifyMemory misses these since its parameters became buffer maps.

REPORT_JSON gets {"checked": [...names...], "failures": [{"function", "target",
"unbound_blocks", "host_accesses"}], "uninspected": [...names a TVM without a TIR
visitor lowered...], "build_api": ...}. The command's exit code is
this script's; the library gate, not this script, decides what a failure means.

Metal kernels are kept as their MSL source in kernels.metal beside REPORT_JSON: the
device code of a Metal library built where nothing compiles MSL (Linux), for the record.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

GPU_KINDS = frozenset({"cuda", "vulkan", "metal", "webgpu", "opencl", "rocm"})
# Attribute keys that open a region run by GPU threads.
_THREAD_ATTRS = frozenset({"thread_extent", "virtual_thread"})


def _target_kind(target: Any) -> str | None:
    if target is None:
        return None
    kind = getattr(target, "kind", None)
    return str(getattr(kind, "name", kind)) if kind is not None else None


def _attrs(func: Any) -> dict[str, Any]:
    attrs = func.attrs
    return {str(key): value for key, value in attrs.items()} if attrs is not None else {}


def _is_host_function(func: Any) -> bool:
    return any(key.endswith("is_host_func") and bool(value) for key, value in _attrs(func).items())


def _thread_region(node: Any) -> bool:
    kind = type(node).__name__
    if kind == "For":
        return node.thread_binding is not None or "THREAD_BINDING" in str(node.kind)
    if kind == "AttrStmt":
        return str(node.attr_key) in _THREAD_ATTRS
    return False


def inspect_function(func: Any, visit: Any) -> tuple[list[str], list[str]]:
    """The blocks and global buffers of `func` that no thread binding encloses.

    `visit` is TVM's pre_order_visit: returning False at a thread region skips all
    inside it, so everything seen is code the host would run. A block counts when it
    stores something itself; a block that only wraps thread launches (mlc-llm's
    hand-written sampling kernels, TVM's GPU sort) runs nothing on the host."""
    blocks: list[str] = []
    accesses: list[str] = []

    def stores_outside_threads(body: Any) -> bool:
        found = False

        def look(node: Any) -> bool:
            nonlocal found
            kind = type(node).__name__
            if found or _thread_region(node) or kind in ("SBlockRealize", "BlockRealize"):
                return False
            found = kind == "BufferStore"
            return not found

        visit(body, look)
        return found

    def seen(node: Any) -> bool:
        if _thread_region(node):
            return False
        kind = type(node).__name__
        if kind in ("SBlockRealize", "BlockRealize"):
            name = str(node.block.name_hint)
            if name != "root" and name not in blocks and stores_outside_threads(node.block.body):
                blocks.append(name)
        elif kind in ("BufferLoad", "BufferStore"):
            buffer = node.buffer
            scope = str(buffer.scope()) if callable(getattr(buffer, "scope", None)) else "global"
            name = str(buffer.name)
            if scope == "global" and name not in accesses:
                accesses.append(name)
        return True

    visit(func.body, seen)
    return blocks, accesses


def _gpu_functions(mod: Any, target: Any) -> list[tuple[str, str, Any]]:
    """(name, target kind, PrimFunc) of every function of `mod` meant for a GPU."""
    found = []
    default_kind = _target_kind(target)
    for gvar, func in mod.functions.items():
        if type(func).__name__ != "PrimFunc" or _is_host_function(func):
            continue
        attrs = _attrs(func)
        kind = _target_kind(attrs["target"]) if "target" in attrs else default_kind
        if kind in GPU_KINDS:
            found.append((str(gvar.name_hint), str(kind), func))
    return found


def gpu_functions(mod: Any, target: Any) -> list[str]:
    return [name for name, _, _ in _gpu_functions(mod, target)]


def check_module(mod: Any, target: Any, visit: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Every GPU PrimFunc of `mod` checked: (names checked, failures)."""
    checked: list[str] = []
    failures: list[dict[str, Any]] = []
    for name, kind, func in _gpu_functions(mod, target):
        checked.append(name)
        blocks, accesses = inspect_function(func, visit)
        if blocks or accesses:
            failures.append({"function": name, "target": kind, "unbound_blocks": blocks, "host_accesses": accesses})
    return checked, failures


def _coerce_target(target: Any) -> Any:
    import tvm

    if target is None or not isinstance(target, (str, dict)):
        return target
    return tvm.target.Target(target)


def _build_entry(tvm: Any) -> tuple[Any, str, Any] | None:
    """(owner, name, pre_order_visit or None) of the TIR build relax.build calls:
    tvm.tirx.build (TVM 0.26), tvm.tir.build (2025), tvm.build (older relax, the legacy flow)."""
    for owner_name, functor_name in (("tirx", "tirx"), ("tir", "tir"), ("", "tir")):
        owner = getattr(tvm, owner_name, None) if owner_name else tvm
        if owner is None or not callable(getattr(owner, "build", None)):
            continue
        functors = getattr(tvm, functor_name, None)
        functor = getattr(functors, "stmt_functor", None) if functors is not None else None
        return owner, owner_name, getattr(functor, "pre_order_visit", None)
    return None


SOURCE_FILES = {"metal": "kernels.metal"}
"""Device kinds whose kernels are kept as source text, and the file beside the report."""


def keep_device_source(built: Any, kind: str | None, folder: Path) -> None:
    """Append the device modules' source of a built module (Metal: MSL) to its file."""
    name = SOURCE_FILES.get(kind or "")
    if name is None:
        return
    for module in getattr(built, "imports", ()) or ():
        source = module.inspect_source() if hasattr(module, "inspect_source") else ""
        if source:
            with (folder / name).open("a") as handle:
                handle.write(source if source.endswith("\n") else source + "\n")


def install(report: dict[str, Any], keep_in: Path | None = None) -> None:
    """Wrap the TIR build of this TVM so every module it lowers is checked first (and
    the source of device kinds in SOURCE_FILES kept in `keep_in`)."""
    import tvm

    entry = _build_entry(tvm)
    if entry is None:
        report["build_api"] = None
        return
    owner, owner_name, visit = entry
    build = owner.build

    def checked_build(mod: Any, target: Any = None, *args: Any, **kwargs: Any) -> Any:
        if visit is None:
            # A TVM without a TIR visitor in Python (0.27 has none): GPU functions it
            # lowers cannot be checked, and the gate says so.
            report["uninspected"].extend(gpu_functions(mod, _coerce_target(target)))
        else:
            names, failures = check_module(mod, _coerce_target(target), visit)
            report["checked"].extend(names)
            report["failures"].extend(failures)
        built = build(mod, target, *args, **kwargs)
        if keep_in is not None:
            keep_device_source(built, _target_kind(_coerce_target(target)), keep_in)
        return built

    owner.build = checked_build
    report["build_api"] = f"tvm.{owner_name}.build" if owner_name else "tvm.build"


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit(__doc__)
    out = Path(argv[0])
    command = argv[2:]
    report: dict[str, Any] = {"checked": [], "failures": [], "uninspected": [], "build_api": None}
    install(report, keep_in=out.parent)
    if command[0] == "mlc_llm":
        module, args = "mlc_llm", command[1:]
    elif command[:2] in (["python", "-m"], ["python3", "-m"]) and len(command) > 2:
        module, args = command[2], command[3:]
    else:
        sys.exit(f"kernel_check_script: cannot run {command[0]!r} in-process; give `mlc_llm ...` or `python -m ...`")
    sys.argv = [module, *args]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"kernel check: {len(report['checked'])} GPU function(s), {len(report['failures'])} with host code")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
