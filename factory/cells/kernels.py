"""PURE: the library gate's verdict on a GPU library's kernel check.

The compile step of every GPU target runs the toolchain's compiler through
factory/in_toolchain/kernel_check_script.py, which walks each GPU function before TVM
lowers it and records blocks and global-buffer accesses no thread binding encloses:
code the host would run against device memory. Nothing in TVM or mlc-llm refuses such
a library (CUDA compiles it silently); this does, naming the functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from factory.cells.gates import GateResult

_SHOWN = 4  # blocks or buffers named per function; the report keeps them all
_HINT = (
    "the toolchain's scheduler left these kernels partly on the host; add a patch that keeps them "
    "bound (images/wheel/patches/low-batch-gemv-unbound-blocks.patch fixes mlc-llm's low-batch GEMV)"
)


def judge_kernels(library_name: str, report: Mapping[str, Any] | None) -> GateResult | None:
    """A failed library gate for a GPU library with host-run kernels (or no check at all);
    None when every GPU function the compile lowered is bound."""
    if report is None:
        return GateResult(
            "library",
            "failed",
            (f"{library_name}: compiled without the kernel check (no kernel-check.json)",),
            "compile it again with this factory; a GPU library is accepted only with its kernel check",
        )
    if report.get("build_api") is None:
        return GateResult(
            "library",
            "failed",
            (f"{library_name}: the toolchain's TVM has no TIR build the kernel check can wrap",),
            "teach factory/in_toolchain/kernel_check_script.py this TVM's build entry point",
        )
    if uninspected := report.get("uninspected"):
        return GateResult(
            "library",
            "failed",
            (f"{library_name}: this TVM has no TIR visitor, so {_names(uninspected)} went unchecked",),
            "build GPU libraries in a toolchain whose TVM has tirx.stmt_functor (apache-tvm 0.26)",
        )
    problems = []
    for failure in report.get("failures", []):
        parts = []
        if blocks := failure.get("unbound_blocks"):
            parts.append("blocks outside any thread binding: " + _names(blocks))
        if accesses := failure.get("host_accesses"):
            parts.append("host code touches device buffers: " + _names(accesses))
        problems.append(f"{library_name}: {failure['function']} ({failure.get('target')}): " + "; ".join(parts))
    if problems:
        return GateResult("library", "failed", tuple(problems), _HINT, {"kernel_check": _summary(report)})
    return None


def kernel_details(report: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a passed library gate records of the check."""
    return {"kernel_check": _summary(report)} if report is not None else {}


def _summary(report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "gpu_functions": len(report.get("checked", [])),
        "host_run": sorted(f["function"] for f in report.get("failures", [])),
    }


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")
