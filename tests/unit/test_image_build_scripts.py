"""What the toolchain image hands TVM's and mlc-llm's builds, checked without
building: the config.cmake each stage writes from the rendered build args, the
way TVM's Python package is installed, and the system packages TVM's CMake
looks for. The expectations come from the recorded contract of each pin (TVM's
CMake and packaging, read at the nearest readable TVM commit)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from factory.manifest.load import load_manifest
from factory.manifest.lock import Lock
from factory.plan.graph import plan
from factory.toolchains.contract import contract_for
from factory.toolchains.images.plan import METAL_SHARED, PIN_ARGS, plan_image, plan_metal_prefix

REPO = Path(__file__).resolve().parents[2]
CUDA = REPO / "images" / "cuda"
WORLD = REPO / "manifests" / "source-built.yaml"
_SET = re.compile(r"^set\((\w+) (.*)\)$")


def _config(stage: str, args: dict[str, str]) -> dict[str, str]:
    """The config.cmake a stage writes, as NAME -> value (quotes removed)."""
    env = {"PATH": os.environ["PATH"], **args}
    done = subprocess.run(
        ["bash", str(CUDA / "cmake-config.sh"), stage], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    values = {}
    for line in done.stdout.splitlines():
        match = _SET.match(line)
        assert match, line
        values[match.group(1)] = match.group(2).strip('"')
    return values


def _world_images() -> list[tuple[str, dict[str, str]]]:
    loaded = load_manifest(WORLD)
    return [
        (name, dict(plan_image(loaded, name, Lock(), local_base_id="sha256:" + "0" * 64).build_args))
        for name in loaded.manifest.toolchains
    ]


def _cuda_archs(name: str) -> set[str]:
    """The CUDA archs of the planned container cells of toolchain `name`, as numbers (80, 90)."""
    loaded = load_manifest(WORLD)
    targets = loaded.manifest.targets
    archs = set()
    for cell in plan(loaded, Lock()).cells:
        device = targets[cell.cell.target].device
        mine = cell.toolchain == name and cell.runner == "container"
        if mine and isinstance(device, dict) and device["kind"] == "cuda":
            archs.add(str(device["arch"]).removeprefix("sm_"))
    return archs


@pytest.mark.parametrize(("name", "args"), _world_images(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_stage_gives_tvm_the_cuda_archs_of_its_targets(name: str, args: dict[str, str]) -> None:
    """TVM's CUDA.cmake (at the pins' TVM) reads CMAKE_CUDA_ARCHITECTURES from
    build/config.cmake; unset, nvcc's default arch is all TVM's CUDA code is built
    for, and TVM of 2026 builds its sm90 CUTLASS kernels only for "90a". The tvm
    stage and the mlc-llm stage (which adds TVM as a subdirectory) both need it."""
    contract = contract_for(args["MLC_LLM_COMMIT"])
    assert contract is not None
    cmake = contract.tvm_cmake
    assert args["USE_CUDA"] == "ON"
    expected = cmake.cuda_architectures([f"sm_{a}" for a in _cuda_archs(name)])
    assert args["CUDA_ARCHITECTURES"] == expected != ""
    for stage in ("tvm", f"mlc-{args['FLOW']}"):
        config = _config(stage, args)
        assert cmake.cuda_architectures_variable == "CMAKE_CUDA_ARCHITECTURES"
        listed = config["CMAKE_CUDA_ARCHITECTURES"].split(";")
        for arch in _cuda_archs(name):
            assert cmake.arch_specific.get(arch, arch) in listed, (stage, arch)
        assert config["USE_CUDA"] == "ON" and config["CMAKE_BUILD_TYPE"] == "RelWithDebInfo"
    tvm = _config("tvm", args)
    assert tvm["USE_LLVM"].endswith("--ignore-libllvm --link-static") and tvm["HIDE_PRIVATE_SYMBOLS"] == "ON"
    source_var = "TVM_HOME" if args["FLOW"] == "legacy" else "TVM_SOURCE_DIR"
    assert _config(f"mlc-{args['FLOW']}", args)[source_var] == "/opt/src/tvm"
    if args["FLOW"] == "current":
        assert "90a" in tvm["CMAKE_CUDA_ARCHITECTURES"].split(";")  # tvm:cmake/modules/contrib/CUTLASS.cmake


def test_cuda_without_archs_stops_the_image_build_with_a_reason() -> None:
    args = {"USE_CUDA": "ON", "CUDA_ARCHITECTURES": ""}
    done = subprocess.run(
        ["bash", str(CUDA / "cmake-config.sh"), "tvm"],
        env={"PATH": os.environ["PATH"], **args},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "CUDA_ARCHITECTURES is empty" in done.stderr
    assert "CMAKE_CUDA_ARCHITECTURES" not in _config("tvm", {"USE_CUDA": "OFF"})


def test_the_dockerfile_writes_each_config_with_the_script() -> None:
    text = re.sub(r"\\\n", " ", (CUDA / "Dockerfile").read_text())
    for stage in ("tvm", "mlc-legacy", "mlc-current"):
        assert f"bash /opt/factory/cmake-config.sh {stage} > build/config.cmake" in text
    assert "printf 'set(" not in text
    assert "COPY cmake-config.sh install-tvm-python.sh /opt/factory/" in text
    assert "CUDA_ARCHITECTURES" in PIN_ARGS


def _fake_tvm(root: Path, flow: str) -> Path:
    """A TVM checkout shaped like the pin's: python/setup.py (legacy) or a root pyproject and 3rdparty/tvm-ffi."""
    root.mkdir(parents=True)
    if flow == "legacy":
        (root / "python").mkdir()
        (root / "python" / "setup.py").write_text("")
    else:
        (root / "pyproject.toml").write_text("[build-system]\nbuild-backend = 'scikit_build_core.build'\n")
        (root / "3rdparty" / "tvm-ffi").mkdir(parents=True)
        (root / "python" / "tvm").mkdir(parents=True)
    return root


def _pip_calls(tmp_path: Path, script: Path, tvm: Path, *extra: str) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "pip.log"
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "TVM_LIBRARY_PATH=${{TVM_LIBRARY_PATH:-}} $*" >> {log}\n')
    (bin_dir / "pip").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(script), str(tvm), *extra], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines()


@pytest.mark.parametrize("flow", ["legacy", "current"])
def test_tvm_python_is_installed_the_way_the_pinned_tvm_packages_it(tmp_path: Path, flow: str) -> None:
    """apache/tvm dropped python/setup.py in September 2025: TVM of the current pin
    builds its package from the root pyproject.toml, after its own tvm-ffi."""
    pin = {"legacy": "b44cdc53381bd804ef000775bb280de1c7ca6439", "current": "bb586e51eb20cba2e82216b75d22d8dd6657cce1"}
    contract = contract_for(pin[flow])
    assert contract is not None
    tvm = _fake_tvm(tmp_path / "tvm", flow)
    calls = _pip_calls(tmp_path, CUDA / "install-tvm-python.sh", tvm, "--no-deps")
    if contract.tvm_python.install == "python":
        assert calls == [f"TVM_LIBRARY_PATH={tvm}/build install --no-deps {tvm}/python"]
    else:
        assert contract.tvm_python.ffi_package == "3rdparty/tvm-ffi"
        assert calls == [
            f"TVM_LIBRARY_PATH= install --no-deps {tvm}/3rdparty/tvm-ffi",
            f"TVM_LIBRARY_PATH= install --no-deps {tvm}",
        ]


def test_neither_the_image_nor_the_metal_bootstrap_assumes_python_setup_py() -> None:
    text = (CUDA / "Dockerfile").read_text()
    dockerfile = text[text.index("FROM base AS tvm") : text.index("FROM tvm AS mlc-source")]
    bootstrap = (REPO / "images" / "metal-runner" / "bootstrap.sh").read_text()
    assert "bash /opt/factory/install-tvm-python.sh /opt/src/tvm" in dockerfile
    assert 'bash "$here/../cuda/install-tvm-python.sh" "$tvm" --quiet --no-deps' in bootstrap
    for text in (dockerfile, bootstrap):
        assert "pip install ./python" not in text and '"$tvm/python"' not in text


def test_the_metal_prefix_hash_covers_the_shared_install_script() -> None:
    assert METAL_SHARED == ("images/cuda/install-tvm-python.sh",)
    loaded = load_manifest(WORLD)
    assert plan_metal_prefix(loaded, "current-v0.20.0").hash == plan_metal_prefix(loaded, "current-v0.20.0").hash


def test_vulkan_builds_get_the_spirv_tools_tvm_links() -> None:
    """TVM's FindVulkan.cmake (tvm:cmake/utils/FindVulkan.cmake:86-88 at apache/tvm
    c0406a54) looks for the SPIRV-Tools library and libspirv.h besides the SPIR-V
    headers; Ubuntu's spirv-tools package ships both."""
    text = re.sub(r"\\\n", " ", (CUDA / "Dockerfile").read_text())
    install = next(line for line in text.splitlines() if "llvm-15-dev" in line)
    for package in ("libvulkan-dev", "spirv-headers", "spirv-tools", "glslang-tools"):
        assert f" {package} " in install, package


@pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("nvcc")), reason="needs cmake and nvcc")
def test_cmake_gives_cuda_the_archs_of_the_config_and_nvcc_default_without(tmp_path: Path) -> None:
    """TVM's CMakeLists includes build/config.cmake, then CUDA.cmake enables the CUDA
    language before it checks CMAKE_CUDA_ARCHITECTURES. With the config's value, CUDA
    code is built for exactly those archs; without it, enable_language(CUDA) already
    defines the variable as nvcc's default arch, so TVM's fatal error never fires and
    the build silently targets that one default arch."""
    project = tmp_path / "src"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\n"
        "project(probe C CXX)\n"
        "if(EXISTS ${CMAKE_BINARY_DIR}/config.cmake)\n  include(${CMAKE_BINARY_DIR}/config.cmake)\nendif()\n"
        "enable_language(CUDA)\n"
        'message(STATUS "archs=[${CMAKE_CUDA_ARCHITECTURES}]")\n'
    )

    def configure(config: str | None) -> str:
        build = tmp_path / ("with" if config else "without")
        build.mkdir()
        if config is not None:
            (build / "config.cmake").write_text(config)
        done = subprocess.run(
            ["cmake", "-S", str(project), "-B", str(build), f"-DCMAKE_CUDA_COMPILER={shutil.which('nvcc')}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        match = re.search(r"archs=\[(.*)\]", done.stdout)
        assert match, done.stdout
        return match.group(1)

    config = subprocess.run(
        ["bash", str(CUDA / "cmake-config.sh"), "mlc-current"],
        env={"PATH": os.environ["PATH"], "USE_CUDA": "ON", "CUDA_ARCHITECTURES": "80;90a"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert configure(config) == "80;90a"
    default = configure(None)
    assert default and default != "80;90a"  # nvcc's default, not TVM's "native" or a fatal error
