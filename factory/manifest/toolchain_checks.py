"""Rules on the manifest's toolchains: build switches against what each kind of image
can build (a wheel toolchain's image builds only Vulkan and the web runtime beside the
wheel), and the patch files they name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from factory.manifest.findings import Finding
from factory.manifest.model import Manifest, Toolchain, WheelPin
from factory.manifest.yamlfile import PathKey


def toolchain_findings(m: Manifest, root: Path) -> Iterator[Finding]:
    base = root.resolve()
    for name, toolchain in m.toolchains.items():
        options = toolchain.build
        for switch in ("cutlass", "cublas"):
            if getattr(options, switch) and not options.cuda:
                yield Finding(
                    ("toolchains", name, "build", switch),
                    f"{switch} needs CUDA, which this toolchain does not build",
                    f"set build.cuda: true or build.{switch}: false",
                )
        if toolchain.is_wheel:
            yield from _wheel_toolchain(name, toolchain)
        elif options.webgpu:
            yield Finding(
                ("toolchains", name, "build", "webgpu"),
                "only the wheel toolchain's image (images/wheel) builds TVM's web runtime and carries a browser",
                "build WebGPU cells with a wheel toolchain (tvm: {wheel: ...}), or set build.webgpu: false",
            )
        if options.cuda and toolchain.cuda_version is None:
            yield Finding(
                ("toolchains", name, "cuda_version"),
                "build.cuda is on but no cuda_version is given",
                "set cuda_version, e.g. '12.8'",
            )
        for j, patch in enumerate(toolchain.patches):
            yield from project_file(
                base, patch.path, ("toolchains", name, "patches", j, "path"), "patch", "patches/legacy/NAME.patch"
            )


# What the apache-tvm wheels from PyPI are built with (FACTS: LLVM and CUDA on; Vulkan,
# cuBLAS and CUTLASS off; the Metal codegen in every wheel and the Metal runtime in the
# macOS arm64 one, which the macOS runner installs). A wheel toolchain cannot switch more
# on, except Vulkan and WebGPU's web runtime, which its image builds beside the wheel from
# the wheel's own TVM sources (the wheel has the WebGPU codegen already).
_WHEEL_LACKS = ("cublas", "cutlass")


def _wheel_toolchain(name: str, toolchain: Toolchain) -> Iterator[Finding]:
    if toolchain.flow != "current":
        yield Finding(
            ("toolchains", name, "flow"),
            "a TVM wheel toolchain runs the current flow (mlc-llm's python/ package without libmlc_llm)",
            "set flow: current, or pin tvm to a relax commit for the legacy flow",
        )
    tvm = toolchain.tvm
    builds = {"vulkan": "TVM's Vulkan runtime and codegen", "webgpu": "TVM's web runtime"}
    lacking = isinstance(tvm, WheelPin) and (tvm.source is None or tvm.ffi_source is None)
    for switch, what in builds.items():
        if getattr(toolchain.build, switch) and lacking and isinstance(tvm, WheelPin):
            missing = "source" if tvm.source is None else "ffi_source"
            yield Finding(
                ("toolchains", name, "tvm", missing),
                f"build.{switch} on a wheel toolchain builds {what} from the wheel's sources",
                "add tvm.source (apache/tvm at the wheel's commit) and tvm.ffi_source (its tvm-ffi submodule commit)",
            )
    for switch in _WHEEL_LACKS:
        if getattr(toolchain.build, switch):
            yield Finding(
                ("toolchains", name, "build", switch),
                f"the apache-tvm wheel is not built with {switch}",
                f"set build.{switch}: false, or use a source-built toolchain (tvm: {{repo, commit}})",
            )


def project_file(base: Path, relative: str, where: PathKey, what: str, example: str) -> Iterator[Finding]:
    """A file the manifest names must exist inside the root: it is hashed into keys and copied into builds."""
    path = (base / relative).resolve()
    if not path.is_relative_to(base) or PurePosixPath(relative).is_absolute():
        yield Finding(
            where, f"{what} path {relative!r} leaves the manifest root", f"keep it inside the project, e.g. {example}"
        )
    elif not path.is_file():
        yield Finding(
            where,
            f"{what} file {relative!r} not found under {base}",
            "create it, or fix the path (relative to the manifest's root)",
        )
