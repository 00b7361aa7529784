"""Toolchain images without an engine: Dockerfile lint and contract, tags, build args, errors."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory.manifest.load import load_manifest
from factory.manifest.lock import Lock
from factory.toolchains.images.builder import BuildExtras, context_tar
from factory.toolchains.images.plan import PIN_ARGS, TRANSPORT_ARGS, plan_image
from tests.support.docker import conformance_context, toolchain_manifest
from tests.support.run import factory

REPO = Path(__file__).resolve().parents[2]
WORLD = REPO / "manifests" / "source-built.yaml"
DOCKERFILES = [
    REPO / "images" / "cuda" / "Dockerfile",
    REPO / "images" / "wheel" / "Dockerfile",
    REPO / "tests" / "toolchains" / "conformance" / "Dockerfile",
]
BIN = Path(sys.executable).parent
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfiles_are_hadolint_clean(dockerfile: Path) -> None:
    done = subprocess.run([str(BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _stages(text: str) -> list[tuple[str, list[str]]]:
    """(stage name, its instructions with continuation lines joined), global ARGs as stage ''."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[tuple[str, list[str]]] = [("", [])]
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append((line.split()[-1], []))
        stages[-1][1].append(line)
    return stages


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfiles_declare_every_pin_arg(dockerfile: Path) -> None:
    declared = {m.group(1) for m in re.finditer(r"^ARG (\w+)", dockerfile.read_text(), flags=re.MULTILINE)}
    assert set(PIN_ARGS) | set(TRANSPORT_ARGS) <= declared


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_pin_args_are_declared_in_every_stage_that_uses_them(dockerfile: Path) -> None:
    """ARGs are scoped to a stage: one used but not redeclared silently expands to ''."""
    for name, lines in _stages(dockerfile.read_text())[1:]:
        declared = {line.split()[1].split("=")[0] for line in lines if line.startswith("ARG ")}
        for line in lines[1:]:
            if line.startswith(("ARG ", "FROM ")):
                continue
            used = set(re.findall(r"\$\{?(\w+)", line)) & set(PIN_ARGS)
            assert used <= declared, f"stage {name}: {sorted(used - declared)} used in `{line[:60]}` but not declared"


def _lock_for(path: Path) -> Lock:
    data = yaml.safe_load(path.read_text())
    return Lock(images={t["base_image"]: DIGEST for t in data["toolchains"].values()})


def test_world_build_args_render_the_manifest_pins() -> None:
    loaded = load_manifest(WORLD)
    lock = _lock_for(WORLD)
    legacy = plan_image(loaded, "legacy-2024.03", lock)
    current = plan_image(loaded, "current-v0.20.0", lock)
    assert legacy.build_args == {
        "BASE_IMAGE": f"nvidia/cuda:12.1.1-devel-ubuntu22.04@{DIGEST}",
        "TOOLCHAIN": "legacy-2024.03",
        "FLOW": "legacy",
        "TVM_REPO": "https://github.com/mlc-ai/relax",
        "TVM_COMMIT": "f06d486b4a1a27f0bbb072688a5fc41e7b15323c",
        "TVM_WHEEL": "",
        "MLC_LLM_REPO": "https://github.com/mlc-ai/mlc-llm",
        "MLC_LLM_COMMIT": "b44cdc53381bd804ef000775bb280de1c7ca6439",
        "TOKENIZERS_CPP_REPO": "",
        "TOKENIZERS_CPP_COMMIT": "",
        "USE_CUDA": "ON",
        "USE_CUTLASS": "ON",
        "USE_CUBLAS": "ON",
        "USE_LLVM": "ON",
        "USE_VULKAN": "OFF",
        "USE_WEBGPU": "OFF",
        "CUDA_VERSION": "12.1",
        # Every CUDA arch its cells target, as upstream's legacy CI spelled them.
        "CUDA_ARCHITECTURES": "80;90",
        "PYTHON_VERSION": "3.11",
    }
    assert current.build_args["FLOW"] == "current"
    # TVM of 2026 builds its sm90 CUTLASS kernels only for "90a".
    assert current.build_args["CUDA_ARCHITECTURES"] == "80;90a"
    assert current.build_args["MLC_LLM_COMMIT"] == "bb586e51eb20cba2e82216b75d22d8dd6657cce1"
    assert current.build_args["USE_VULKAN"] == "ON"
    assert current.build_args["BASE_IMAGE"].endswith("@" + DIGEST)
    assert legacy.dockerfile.resolve() == REPO / "images" / "cuda" / "Dockerfile"
    assert legacy.tag != current.tag
    assert legacy.ref.startswith("factory-toolchain/legacy-2024.03:")
    for key, value in legacy.build_args.items():
        if value:
            assert legacy.labels[f"org.factory.pin.{key.lower().replace('_', '-')}"] == value


def test_an_unlocked_base_image_that_the_engine_lacks_is_refused() -> None:
    from factory.errors import InputError

    with pytest.raises(InputError) as caught:
        plan_image(load_manifest(WORLD), "legacy-2024.03", Lock())
    assert caught.value.problems[0].field == "toolchains.legacy-2024.03.base_image"
    assert "factory lock" in caught.value.problems[0].fix


def _conformance(tmp_path: Path) -> Path:
    conformance_context(tmp_path / "conformance")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(toolchain_manifest(tmp_path)))
    return manifest


def _tag(manifest: Path, base: str = "sha256:base") -> str:
    return plan_image(load_manifest(manifest), "conformance", Lock(), local_base_id=base).tag


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "conformance" / "Dockerfile").write_text(
            (root / "conformance" / "Dockerfile").read_text() + "\n# edited\n"
        ),
        lambda root: (root / "conformance" / "standin" / "extra.py").write_text("x = 1\n"),
        lambda root: (root / "conformance" / "requirements.txt").chmod(0o755),
        lambda root: (root / "m.yaml").write_text(
            (root / "m.yaml").read_text().replace("cuda_version: '12.8'", "cuda_version: '12.9'")
        ),
    ],
    ids=["dockerfile", "context-file", "context-mode", "pin"],
)
def test_the_tag_hashes_dockerfile_context_and_pins(tmp_path: Path, change: Callable[[Path], Any]) -> None:
    manifest = _conformance(tmp_path)
    before = _tag(manifest)
    assert _tag(manifest) == before
    change(tmp_path)
    assert _tag(manifest) != before


def test_the_tag_follows_the_base_image_and_ignores_the_toolchain_name(tmp_path: Path) -> None:
    manifest = _conformance(tmp_path)
    assert _tag(manifest, "sha256:one") != _tag(manifest, "sha256:two")
    before = _tag(manifest)
    text = (
        manifest.read_text()
        .replace("conformance:\n", "renamed:\n")
        .replace("toolchain: conformance", "toolchain: renamed")
    )
    manifest.write_text(text)
    assert plan_image(load_manifest(manifest), "renamed", Lock(), local_base_id="sha256:base").tag == before


def test_the_build_context_is_deterministic_and_carries_the_extras(tmp_path: Path) -> None:
    import io
    import tarfile

    manifest = _conformance(tmp_path)
    plan = plan_image(load_manifest(manifest), "conformance", Lock(), local_base_id="sha256:base")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "x-1.0-py3-none-any.whl").write_bytes(b"wheel")
    extras = BuildExtras(wheelhouse=wheels)
    first = context_tar(plan, extras)
    assert context_tar(plan, extras) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
    assert "factory-extra/Dockerfile" in names
    assert "factory-extra/wheelhouse/x-1.0-py3-none-any.whl" in names
    assert "factory-extra/certs" in names and "standin/mlc_llm/__main__.py" in names


def test_no_engine_is_a_clear_error_with_exit_5(tmp_path: Path) -> None:
    manifest = _conformance(tmp_path)
    for args in (["images", "build", "-m", str(manifest)], ["images", "ls"]):
        done = factory(*args, env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
        assert done.returncode == 5, done.stderr
        assert f"no Docker engine answers at unix://{tmp_path}/no-engine.sock" in done.stderr
        assert "dockerd" in done.stderr
        assert "Traceback" not in done.stderr


def test_bad_build_extras_are_input_errors(tmp_path: Path) -> None:
    manifest = _conformance(tmp_path)
    not_pem = tmp_path / "corp.crt"
    not_pem.write_text("hello")
    done = factory(
        "images", "build", "-m", str(manifest), "--ca-cert", str(not_pem), "--offline",
        "--wheelhouse", str(tmp_path / "missing"),
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{not_pem}: --ca-cert: not a PEM certificate" in done.stderr
    assert f"{tmp_path / 'missing'}: --wheelhouse: not a folder of .whl files" in done.stderr


def test_an_unknown_toolchain_is_named(tmp_path: Path) -> None:
    done = factory("images", "build", "-m", str(_conformance(tmp_path)), "--toolchain", "nope")
    assert done.returncode == 2
    assert "no toolchain named 'nope'" in done.stderr and "conformance" in done.stderr


def test_the_wheel_toolchain_renders_its_wheel_pin_and_takes_mlc_llm_as_a_source() -> None:
    wheel_manifest = REPO / "manifests" / "world.yaml"
    loaded = load_manifest(wheel_manifest)
    plan = plan_image(loaded, "wheel-tvm0.26", _lock_for(wheel_manifest))
    assert plan.build_args["TVM_WHEEL"] == "apache-tvm==0.26.0"
    # Vulkan is built beside the wheel from the wheel's own TVM commit and its tvm-ffi commit.
    assert plan.build_args["USE_VULKAN"] == "ON"
    assert plan.build_args["TVM_REPO"] == "https://github.com/apache/tvm"
    assert plan.build_args["TVM_COMMIT"].startswith("c7b458e946bc")
    # WebGPU: the web runtime from the same sources, and mlc-llm's web/ at the toolchain's commit.
    assert plan.build_args["USE_WEBGPU"] == "ON"
    assert [(kind, pin.commit[:8]) for kind, pin in plan.tvm_sources] == [
        ("tvm", "c7b458e9"), ("tvm-ffi", "12dbf053"), ("mlc-llm-web", "79d603f0"),
    ]  # fmt: skip
    assert plan.mlc_llm_source is not None and plan.mlc_llm_source.commit.startswith("79d603f0")
    # Every patch is staged in manifest order and named by content in the labels (and so in the tag).
    count = len(loaded.manifest.toolchains["wheel-tvm0.26"].patches)
    assert count >= 12
    assert [dest.split("/")[1][:2] for dest, _ in plan.patches] == [f"{i:02d}" for i in range(count)]
    assert plan.patches[-1][0] == f"tvm/{count - 1:02d}-tvm-spirv-bool-buffers.patch"
    assert len([k for k in plan.labels if k.startswith("org.factory.patch.")]) == count


def _wheel_only() -> dict[str, Any]:
    """manifests/world.yaml's wheel toolchain and the models it builds (the release's own)."""
    data = yaml.safe_load((REPO / "manifests" / "world.yaml").read_text())
    data["root"] = str(REPO)
    data["toolchains"] = {"wheel-tvm0.26": data["toolchains"]["wheel-tvm0.26"]}
    data["models"] = [m for m in data["models"] if m["toolchain"] == "wheel-tvm0.26"]
    data.pop("matrix", None)
    assert isinstance(data, dict)
    return data


def test_a_wheel_toolchain_with_vulkan_must_name_the_wheels_tvm_sources(tmp_path: Path) -> None:
    data = _wheel_only()
    del data["toolchains"]["wheel-tvm0.26"]["tvm"]["ffi_source"]
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(data))
    done = factory("plan", "-m", str(path))
    assert done.returncode == 2, done.stderr
    assert "toolchains.wheel-tvm0.26.tvm.ffi_source" in done.stderr and "build.vulkan" in done.stderr
    requirements = (REPO / "images" / "wheel" / "requirements.lock").read_text()
    assert "apache-tvm==0.26.0 \\\n    --hash=sha256:" in requirements


def test_a_wheel_toolchain_image_does_not_depend_on_the_selected_targets(tmp_path: Path) -> None:
    """Its TVM is a wheel: nothing in the image is built per CUDA arch, so a manifest with
    only the CPU target must reuse the image a CPU+CUDA manifest built."""
    data = _wheel_only()
    full, cpu_only = tmp_path / "full.yaml", tmp_path / "cpu.yaml"
    full.write_text(yaml.safe_dump(data))
    data["targets"] = {"cpu-x86_64": data["targets"]["cpu-x86_64"]}
    cpu_only.write_text(yaml.safe_dump(data))
    tags = {plan_image(load_manifest(p), "wheel-tvm0.26", _lock_for(p)).tag for p in (full, cpu_only)}
    assert len(tags) == 1


def test_webgpu_alone_still_takes_the_wheels_tvm_sources_and_changes_the_tag(tmp_path: Path) -> None:
    """The web runtime is built from the wheel's TVM sources even without Vulkan; switching
    WebGPU off drops mlc-llm's web/ and the switch, and so names another image."""
    data = _wheel_only()
    build = data["toolchains"]["wheel-tvm0.26"]["build"]
    every = dict(data["targets"])
    cpu = {k: t for k, t in every.items() if not isinstance(t["device"], str)}
    tags = {}
    for vulkan, webgpu in ((False, True), (True, False)):
        build.update(vulkan=vulkan, webgpu=webgpu)
        gpu = "webgpu" if webgpu else "vulkan-x86_64"
        data["targets"] = {**cpu, gpu: every[gpu]}
        path = tmp_path / f"v{int(vulkan)}w{int(webgpu)}.yaml"
        path.write_text(yaml.safe_dump(data))
        plan = plan_image(load_manifest(path), "wheel-tvm0.26", _lock_for(path))
        kinds = [kind for kind, _ in plan.tvm_sources]
        assert kinds == (["tvm", "tvm-ffi", "mlc-llm-web"] if webgpu else ["tvm", "tvm-ffi"])
        assert plan.build_args["USE_WEBGPU"] == ("ON" if webgpu else "OFF")
        assert plan.build_args["TVM_COMMIT"].startswith("c7b458e946bc")
        tags[(vulkan, webgpu)] = plan.tag
    assert len(set(tags.values())) == 2


def test_webgpu_is_refused_where_no_image_builds_it(tmp_path: Path) -> None:
    """A source-built toolchain has no web runtime stage, and a webgpu target must link a .wasm."""
    data = yaml.safe_load((REPO / "manifests" / "source-built.yaml").read_text())
    data["root"] = str(REPO)
    data["toolchains"]["current-v0.20.0"]["build"]["webgpu"] = True
    data["targets"]["browser"] = {"device": "webgpu:generic", "runner": "container", "os": "linux"}
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(data))
    done = factory("plan", "-m", str(path))
    assert done.returncode == 2, done.stderr
    assert "toolchains.current-v0.20.0.build.webgpu" in done.stderr and "images/wheel" in done.stderr
    assert "targets.browser.suffix" in done.stderr and "set suffix: wasm" in done.stderr
