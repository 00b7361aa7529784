"""The kernel check's wiring: which compile steps run through it, and what the library
gate makes of its report (the check itself runs in the toolchain: tests/integration/test_mlc_e2e.py)."""

from __future__ import annotations

from typing import Any

from factory.cells.kernels import judge_kernels, kernel_details
from factory.manifest.model import Target
from factory.toolchains.base import StepArgv, kernel_check_digest, with_kernel_check

STEPS = (StepArgv(name="compile", argv=("mlc_llm", "compile", "x")), StepArgv(name="other", argv=("true",)))


def _target(device: Any) -> Target:
    return Target.model_validate({"device": device, "runner": "container", "os": "linux"})


def test_gpu_compiles_run_through_the_check_and_cpu_compiles_do_not() -> None:
    assert with_kernel_check(STEPS, _target({"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu"})) == STEPS
    for device in ({"kind": "cuda", "arch": "sm_80"}, "vulkan:generic"):
        wrapped = with_kernel_check(STEPS, _target(device))
        assert wrapped[0].argv == (
            "python", "/factory/kernel_check_script.py", "/out/kernel-check.json", "--", "mlc_llm", "compile", "x",
        )  # fmt: skip
        assert wrapped[1] == STEPS[1]
    assert len(kernel_check_digest()) == 64


def _failure(function: str, blocks: list[str], accesses: list[str]) -> dict[str, Any]:
    return {"function": function, "target": "cuda", "unbound_blocks": blocks, "host_accesses": accesses}


def test_the_library_gate_names_each_function_with_host_run_code() -> None:
    report = {
        "build_api": "tvm.tirx.build",
        "checked": ["a", "b", "c"],
        "failures": [_failure("matmul2", ["pad", "matmul_rf", "matmul", "write", "extra"], ["x", "y"])],
    }
    result = judge_kernels("lib.so", report)
    assert result is not None and result.failed
    (problem,) = result.problems
    assert problem.startswith("lib.so: matmul2 (cuda): blocks outside any thread binding: pad, matmul_rf")
    assert "and 1 more" in problem and "host code touches device buffers: x, y" in problem
    assert result.details["kernel_check"] == {"gpu_functions": 3, "host_run": ["matmul2"]}


def test_a_clean_report_passes_and_a_missing_or_blind_one_fails() -> None:
    clean = {"build_api": "tvm.tirx.build", "checked": ["a"], "failures": []}
    assert judge_kernels("lib.so", clean) is None
    assert kernel_details(clean) == {"kernel_check": {"gpu_functions": 1, "host_run": []}}
    missing = judge_kernels("lib.so", None)
    assert missing is not None and missing.failed and "without the kernel check" in missing.problems[0]
    blind = judge_kernels("lib.so", {"build_api": None, "checked": [], "failures": []})
    assert blind is not None and blind.failed and "no TIR build" in blind.problems[0]


def test_gpu_functions_a_tvm_could_not_walk_fail_the_gate() -> None:
    report = {"build_api": "tvm.tirx.build", "checked": [], "failures": [], "uninspected": ["add", "mul"]}
    result = judge_kernels("lib.so", report)
    assert result is not None and result.failed and "add, mul went unchecked" in result.problems[0]
