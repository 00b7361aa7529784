"""Metal cells' kernels, compiled and checked on Linux (`factory kernels`).

A Metal library is linked on macOS (xcrun), where the release's macOS jobs build and gate
it. Its kernels come from the TVM codegen that every apache-tvm wheel carries, though, so
the Linux image of the same wheel toolchain can compile a Metal cell up to them: the same
`mlc_llm compile` for the same device, with the cell's arm64-apple-darwin host code, into
an object archive instead of a .dylib (Mach-O objects and the MSL source, which Metal would
compile at load), through the kernel check, keeping the MSL. A patch that breaks Metal then
fails here, in CI, rather than on a release's macOS runner. Nothing is published: the
archive is a build artifact under --work, never a bundle.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from factory.buildkey import build_key
from factory.cells import BuildSettings, execute
from factory.cells.context import BuildContext
from factory.cells.gates import GateFailure, GateResult
from factory.cells.kernels import judge_kernels
from factory.in_toolchain import SCRIPTS_DIR
from factory.manifest.load import LoadedManifest
from factory.manifest.lock import Lock
from factory.manifest.model import WheelPin
from factory.plan.graph import BuildGraph, CellPlan, Node
from factory.runners import Mount
from factory.toolchains import FLOWS
from factory.toolchains.base import (
    CONVERTED,
    KERNEL_CHECK_REPORT,
    SCRIPTS_MOUNT,
    kernel_check_digest,
    with_kernel_check,
)

DEVICE_SOURCE = "kernels.metal"
"""The MSL of every kernel, as the kernel check keeps it beside its report."""


@dataclass(frozen=True, kw_only=True)
class KernelsResult:
    cell: str
    folder: Path
    functions: int
    """GPU functions the kernel check walked."""
    source_bytes: int
    refused: GateResult | None

    @property
    def passed(self) -> bool:
        return self.refused is None


def metal_cells(loaded: LoadedManifest, graph: BuildGraph) -> list[CellPlan]:
    """The selected Metal cells whose toolchain is a wheel toolchain: its Linux image has
    the same TVM (and so the same Metal codegen) as the macOS runner installs."""
    manifest = loaded.manifest
    return [
        cell
        for cell in graph.cells
        if manifest.targets[cell.cell.target].device_kind == "metal"
        and isinstance(manifest.toolchains[cell.toolchain].tvm, WheelPin)
    ]


def _needed(graph: BuildGraph, cells: list[CellPlan]) -> BuildGraph:
    """Only the fetch, tokenizer and convert nodes the cells' compiles stand on."""
    by_id = {n.id: n for n in graph.nodes}
    wanted: set[str] = set()
    todo = [d for c in cells for d in by_id[_compile_of(graph, c).id].deps]
    while todo:
        node = by_id[todo.pop()]
        if node.id not in wanted:
            wanted.add(node.id)
            todo.extend(node.deps)
    return BuildGraph(nodes=tuple(n for n in graph.nodes if n.id in wanted), cells=(), unresolved=graph.unresolved)


def _compile_of(graph: BuildGraph, cell: CellPlan) -> Node:
    bundle = next(n for n in graph.nodes if n.id == cell.bundle)
    return next(n for n in graph.nodes if n.id in bundle.deps and n.kind == "compile")


def check_metal_kernels(
    loaded: LoadedManifest, lock: Lock, graph: BuildGraph, settings: BuildSettings, *, log: Callable[[str], None]
) -> list[KernelsResult]:
    """Convert what the Metal cells need (cached like any build's), then compile each to
    its kernels in the toolchain's Linux image and judge the kernel check's report."""
    cells = metal_cells(loaded, graph)
    if not cells:
        raise GateFailure(
            "no Metal cell of a wheel toolchain is selected", hint="select Metal cells with --only, e.g. '*/*/metal-*'"
        )
    needed = _needed(graph, cells)
    outcomes = execute(loaded, lock, needed, settings, log=log)
    failed = [o.detail for o in outcomes if o.status == "failed"]
    if failed:
        from factory.cells.context import StepFailed

        raise StepFailed("the Metal cells' inputs did not build:\n    " + "\n    ".join(failed))
    ctx = BuildContext(loaded, lock, graph, settings, log)
    return [_compile_kernels(ctx, cell) for cell in cells]


def _compile_kernels(ctx: BuildContext, cell: CellPlan) -> KernelsResult:
    compile_node = _compile_of(ctx.graph, cell)
    model = ctx.models[cell.cell.model]
    flow = FLOWS[cell.flow]
    target = ctx.loaded.manifest.targets[cell.cell.target]
    # The cell's own device and host triple, linked as an object archive instead of a .dylib.
    archive = target.model_copy(update={"suffix": "tar"})
    build = ctx.loaded.manifest.toolchains[cell.toolchain].build
    steps = with_kernel_check(flow.compile_steps(model, cell.cell.quant, cell.cell.target, archive, build), archive)
    key = build_key("metal-kernels", {"kernel_check": kernel_check_digest()}, (compile_node.key,))
    node = Node(
        kind="compile", id=f"kernels:{cell.cell.id}", key=key, deps=compile_node.deps, locked=True,
        attrs=compile_node.attrs,
    )  # fmt: skip
    out = ctx.settings.work / "kernels" / cell.cell.id.replace("/", "--")
    shutil.rmtree(out, ignore_errors=True)  # the kernel check appends its MSL: start empty
    out.mkdir(parents=True)
    converted = ctx.cache.path(ctx.dep(compile_node, "convert")) / flow.converted_params(model.name, cell.cell.quant)
    mounts = (
        ctx.model_mount(model.name),
        Mount(source=converted, target=CONVERTED),
        Mount(source=SCRIPTS_DIR, target=SCRIPTS_MOUNT),
    )
    ctx.run_steps(node, steps, "container", mounts, out)
    library = flow.compiled_library(model.name, cell.cell.quant, cell.cell.target, archive)
    report_path = out / KERNEL_CHECK_REPORT
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    source = out / DEVICE_SOURCE
    refused = judge_kernels(library, report)
    if refused is None and not (out / library).is_file():
        refused = GateResult("library", "failed", (f"{library}: the compile wrote no archive",), "see the log")
    if refused is None and not source.is_file():
        refused = GateResult(
            "library", "failed", (f"{library}: no Metal source was kept ({DEVICE_SOURCE})",), "see the log"
        )
    return KernelsResult(
        cell=cell.cell.id,
        folder=out,
        functions=len(report.get("checked", [])) if report else 0,
        source_bytes=source.stat().st_size if source.is_file() else 0,
        refused=refused,
    )


def refuse_failed(results: list[KernelsResult]) -> None:
    """Exit 4 (a gate's refusal) when the kernel check refused any cell."""
    refused = [r for r in results if r.refused is not None]
    if refused:
        first = refused[0].refused
        raise GateFailure(
            f"{len(refused)} of {len(results)} Metal cell(s) compiled kernels the kernel check refuses",
            hint=first.hint if first is not None else "see the lines above",
        )
