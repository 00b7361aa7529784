"""PURE-ish: what a toolchain image is made of, and its content tag.

The tag is a hash of the Dockerfile, every file of its context, the patches
and the pins (build args), so an unchanged toolchain maps to an image that
already exists and no build starts. Reading files to hash them is the only
I/O here; nothing talks to an engine.

Transport settings (extra CA certificates, a wheelhouse, offline pip) are
deliberately outside the tag: they change how bytes arrive, not which.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory.buildkey import RECIPE_VERSION, canonical
from factory.errors import InputError, Problem
from factory.manifest.load import LoadedManifest
from factory.manifest.lock import Lock
from factory.manifest.matrix import expand_cells
from factory.manifest.model import Manifest, SourcePin, Toolchain, WheelPin
from factory.toolchains.contract import contract_for

REPOSITORY_PREFIX = "factory-toolchain"
LABEL = "org.factory"
# Every Dockerfile a toolchain names receives exactly these build args; the real
# images/cuda/Dockerfile and the test toolchains declare them all (a test checks).
PIN_ARGS = (
    "BASE_IMAGE",
    "TOOLCHAIN",
    "FLOW",
    "TVM_REPO",
    "TVM_COMMIT",
    "TVM_WHEEL",
    "MLC_LLM_REPO",
    "MLC_LLM_COMMIT",
    "TOKENIZERS_CPP_REPO",
    "TOKENIZERS_CPP_COMMIT",
    "USE_CUDA",
    "USE_CUTLASS",
    "USE_CUBLAS",
    "USE_LLVM",
    "USE_VULKAN",
    "USE_WEBGPU",
    "CUDA_VERSION",
    "CUDA_ARCHITECTURES",
    "PYTHON_VERSION",
)
TRANSPORT_ARGS = ("PIP_NO_INDEX",)
EXTRA_DIR = "factory-extra"
"""Folder the factory adds to every build context: Dockerfile, patches, certs, wheelhouse."""


@dataclass(frozen=True, kw_only=True)
class ImagePlan:
    toolchain: str
    repository: str
    tag: str
    build_args: Mapping[str, str]
    labels: Mapping[str, str]
    dockerfile: Path
    context: Path
    patches: tuple[tuple[str, Path], ...]
    """(path inside factory-extra/patches, source file), in manifest order."""
    base_locked: bool
    mlc_llm_source: SourcePin | None = None
    """Wheel toolchains take mlc-llm as a source archive staged by the factory (the pin)."""
    tvm_sources: tuple[tuple[str, SourcePin], ...] = ()
    """(kind, pin) of the sources a wheel toolchain with Vulkan or WebGPU builds from."""

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


def cuda_architectures(manifest: Manifest, name: str) -> str:
    """CMAKE_CUDA_ARCHITECTURES for toolchain `name`: every CUDA arch its container cells target.

    TVM's CUDA sources (CUTLASS, flash-attention, thrust) are compiled for exactly
    these; left unset, CMake takes nvcc's default (sm_52 for CUDA 12), and TVM of
    2026 builds its sm90 CUTLASS kernels only when "90a" is listed. How an arch is
    spelled for the pinned TVM comes from the toolchain's recorded contract.
    """
    toolchain = manifest.toolchains[name]
    # A wheel toolchain compiles nothing of TVM's own: its nvcc runs per target arch when a
    # model compiles, so the image (and its tag) must not depend on which cells are selected.
    if not toolchain.build.cuda or toolchain.is_wheel:
        return ""
    models = {m.name: m for m in manifest.models}
    archs: list[str] = []
    for cell in expand_cells(manifest):
        target = manifest.targets[cell.target]
        if models[cell.model].toolchain != name or target.runner != "container" or target.device_kind != "cuda":
            continue
        arch = target.device.get("arch") if isinstance(target.device, dict) else None
        archs += [str(a) for a in arch] if isinstance(arch, list) else [str(arch)] if arch else []
    if not archs:
        return ""
    contract = contract_for(toolchain.mlc_llm.commit)
    if contract is None:
        numbers = sorted({a.removeprefix("sm_") for a in archs}, key=lambda n: (len(n), n))
        return ";".join(numbers)
    return contract.tvm_cmake.cuda_architectures(archs)


def build_args(name: str, toolchain: Toolchain, base: str, cuda_archs: str = "") -> dict[str, str]:
    def on(flag: bool) -> str:
        return "ON" if flag else "OFF"

    tok = toolchain.tokenizers_cpp
    tvm = toolchain.tvm
    # A wheel toolchain's TVM commit is the wheel's own, when its sources build Vulkan.
    beside = toolchain.build.vulkan or toolchain.build.webgpu
    source = tvm if isinstance(tvm, SourcePin) else tvm.source if beside else None
    wheel = "" if isinstance(tvm, SourcePin) else tvm.wheel
    return {
        "BASE_IMAGE": base,
        "TOOLCHAIN": name,
        "FLOW": toolchain.flow,
        "TVM_REPO": source.repo if source else "",
        "TVM_COMMIT": source.commit if source else "",
        "TVM_WHEEL": wheel,
        "MLC_LLM_REPO": toolchain.mlc_llm.repo,
        "MLC_LLM_COMMIT": toolchain.mlc_llm.commit,
        "TOKENIZERS_CPP_REPO": tok.repo if tok else "",
        "TOKENIZERS_CPP_COMMIT": tok.commit if tok else "",
        "USE_CUDA": on(toolchain.build.cuda),
        "USE_CUTLASS": on(toolchain.build.cutlass),
        "USE_CUBLAS": on(toolchain.build.cublas),
        "USE_LLVM": on(toolchain.build.llvm),
        "USE_VULKAN": on(toolchain.build.vulkan),
        "USE_WEBGPU": on(toolchain.build.webgpu),
        "CUDA_VERSION": toolchain.cuda_version or "",
        "CUDA_ARCHITECTURES": cuda_archs,
        "PYTHON_VERSION": toolchain.python_version,
    }


def plan_image(loaded: LoadedManifest, name: str, lock: Lock, *, local_base_id: str | None = None) -> ImagePlan:
    """The image for toolchain `name`. The base image is taken by locked digest;
    an unlocked base is accepted only when the engine already has it locally
    (`local_base_id`), which is how offline builders work."""
    manifest = loaded.manifest
    toolchain = manifest.toolchains[name]
    digest = lock.image_digest(toolchain.base_image)
    if digest is not None and lock.is_local(toolchain.base_image):
        if local_base_id is not None and local_base_id != digest:
            raise InputError(
                [
                    Problem(
                        file=str(loaded.path),
                        field=f"toolchains.{name}.base_image",
                        message=f"the engine's {toolchain.base_image} is {local_base_id[:19]}, "
                        f"the lock says {digest[:19]}",
                        fix="load the locked base image, or re-lock with `factory lock --local-images --upgrade`",
                    )
                ]
            )
        base, base_identity = toolchain.base_image, digest
    elif digest is not None:
        ref = toolchain.base_image
        base = ref if "@" in ref else f"{ref}@{digest}"
        base_identity = digest
    elif local_base_id is not None:
        base, base_identity = toolchain.base_image, local_base_id
    else:
        raise InputError(
            [
                Problem(
                    file=str(loaded.path),
                    field=f"toolchains.{name}.base_image",
                    message=f"base image {toolchain.base_image!r} has no locked digest and is not in the local engine",
                    fix="run `factory lock` where the registry is reachable, pin `name@sha256:...`, "
                    "or load the image into the engine (`docker load`/`docker import`)",
                )
            ]
        )
    dockerfile = loaded.root / toolchain.image.dockerfile
    context = loaded.root / toolchain.image.context
    problems = []
    if not dockerfile.is_file():
        problems.append((f"toolchains.{name}.image.dockerfile", f"Dockerfile {dockerfile} not found"))
    if not context.is_dir():
        problems.append((f"toolchains.{name}.image.context", f"context folder {context} not found"))
    if problems:
        raise InputError(
            [
                Problem(
                    file=str(loaded.path),
                    field=field,
                    message=message,
                    fix="paths are relative to the manifest's root; the default is images/cuda",
                )
                for field, message in problems
            ]
        )
    patches, patch_digests = staged_patches(loaded, toolchain)
    args = build_args(name, toolchain, base, cuda_architectures(manifest, name))
    content = image_content(loaded, name)
    inputs = {
        "recipe": RECIPE_VERSION,
        **content,
        "args": {**content["args"], "BASE_IMAGE": base},
        "base": base_identity,
    }
    tag = hashlib.sha256(canonical(inputs)).hexdigest()[:24]
    labels = {
        f"{LABEL}.toolchain": name,
        f"{LABEL}.image-hash": tag,
        f"{LABEL}.recipe": RECIPE_VERSION,
        **{f"{LABEL}.pin.{k.lower().replace('_', '-')}": v for k, v in args.items() if v},
        **{f"{LABEL}.patch.{dest}": digest for dest, digest in patch_digests.items()},
    }
    return ImagePlan(
        toolchain=name,
        repository=f"{REPOSITORY_PREFIX}/{name}",
        tag=tag,
        build_args=args,
        labels=labels,
        dockerfile=dockerfile,
        context=context,
        patches=patches,
        base_locked=digest is not None,
        mlc_llm_source=toolchain.mlc_llm if toolchain.is_wheel else None,
        tvm_sources=wheel_tvm_sources(toolchain),
    )


def wheel_tvm_sources(toolchain: Toolchain) -> tuple[tuple[str, SourcePin], ...]:
    """The sources a wheel toolchain's image builds Vulkan and WebGPU from: TVM and tvm-ffi
    for either, and mlc-llm's web/ for WebGPU (none without them)."""
    tvm = toolchain.tvm
    build = toolchain.build
    if not isinstance(tvm, WheelPin) or not (build.vulkan or build.webgpu):
        return ()
    pins = (
        ("tvm", tvm.source),
        ("tvm-ffi", tvm.ffi_source),
        *((("mlc-llm-web", toolchain.mlc_llm),) if build.webgpu else ()),
    )
    return tuple((kind, pin) for kind, pin in pins if pin is not None)


def image_content(loaded: LoadedManifest, name: str) -> dict[str, Any]:
    """Everything the image tag hashes except the base image: the Dockerfile, each
    context file (path, mode, sha256), the patches and the pins.

    `plan` puts the hash of this into every key below the toolchain, so editing
    the Dockerfile or a context script rebuilds what the image builds. A missing
    Dockerfile or context hashes as None: the plan stays printable, and
    `plan_image` names the missing path when a build needs the image.
    """
    toolchain = loaded.manifest.toolchains[name]
    dockerfile = loaded.root / toolchain.image.dockerfile
    context = loaded.root / toolchain.image.context
    _, patch_digests = staged_patches(loaded, toolchain)
    args = build_args(name, toolchain, "", cuda_architectures(loaded.manifest, name))
    return {
        "dockerfile": file_sha256(dockerfile) if dockerfile.is_file() else None,
        "context": context_digests(context) if context.is_dir() else None,
        "patches": sorted(patch_digests.items()),
        "args": {k: v for k, v in args.items() if k not in {"TOOLCHAIN", "BASE_IMAGE"}},
        **(
            {"tvm_sources": [[k, p.model_dump()] for k, p in sources]}
            if (sources := wheel_tvm_sources(toolchain))
            else {}
        ),
    }


def image_content_hash(loaded: LoadedManifest, name: str) -> str:
    """sha256 of `image_content`: changes whenever the toolchain's image would."""
    return hashlib.sha256(canonical(image_content(loaded, name))).hexdigest()


def staged_patches(loaded: LoadedManifest, toolchain: Toolchain) -> tuple[tuple[tuple[str, Path], ...], dict[str, str]]:
    """Where each patch goes (`KIND/NN-name.patch`, applied in manifest order) and its sha256."""
    patches = tuple(
        (f"{p.applies_to}/{index:02d}-{Path(p.path).name}", loaded.root / p.path)
        for index, p in enumerate(toolchain.patches)
    )
    digests = {dest: loaded.file_digests[p.path] for (dest, _), p in zip(patches, toolchain.patches, strict=True)}
    return patches, digests


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def context_files(context: Path) -> list[Path]:
    """Regular files under the context, sorted, without VCS folders."""
    return sorted(
        p for p in context.rglob("*") if p.is_file() and not any(part in {".git", "__pycache__"} for part in p.parts)
    )


def context_digests(context: Path) -> list[list[str]]:
    return [
        [p.relative_to(context).as_posix(), "x" if p.stat().st_mode & 0o111 else "-", file_sha256(p)]
        for p in context_files(context)
    ]


METAL_RUNNER = "images/metal-runner"
# Files of the Linux image's context that bootstrap.sh also runs; they are part of the prefix hash.
METAL_SHARED = ("images/cuda/install-tvm-python.sh",)
# The macOS runner takes the same pins, less what only a Linux image has. TVM_WHEEL stays:
# a wheel toolchain installs the same apache-tvm there (its macOS arm64 wheel has Metal).
_LINUX_ONLY = {
    "BASE_IMAGE",
    "USE_CUDA",
    "USE_CUTLASS",
    "USE_CUBLAS",
    "USE_LLVM",
    "USE_VULKAN",
    "USE_WEBGPU",
    "CUDA_VERSION",
    "CUDA_ARCHITECTURES",
}
METAL_ARGS = tuple(a for a in PIN_ARGS if a not in _LINUX_ONLY)


@dataclass(frozen=True, kw_only=True)
class MetalPrefixPlan:
    """A macOS runner's native toolchain: the same pins, built by bootstrap.sh into
    a prefix named by a hash of the bootstrap folder, the pins and the patches."""

    toolchain: str
    hash: str
    env: Mapping[str, str]
    patches: tuple[tuple[str, Path], ...]


def plan_metal_prefix(loaded: LoadedManifest, name: str) -> MetalPrefixPlan:
    toolchain = loaded.manifest.toolchains[name]
    folder = loaded.root / METAL_RUNNER
    if not folder.is_dir():
        raise InputError(
            [
                Problem(
                    file=str(loaded.path),
                    field="root",
                    message=f"{folder} not found",
                    fix="the manifest's root must be the factory checkout that has images/metal-runner",
                )
            ]
        )
    patches, _ = staged_patches(loaded, toolchain)
    env = metal_env(name, toolchain)
    digest = metal_prefix_hash(loaded, name)
    return MetalPrefixPlan(toolchain=name, hash=digest, env={**env, "TOOLCHAIN_HASH": digest}, patches=patches)


def metal_env(name: str, toolchain: Toolchain) -> dict[str, str]:
    args = build_args(name, toolchain, base="")
    return {k: args[k] for k in METAL_ARGS}


def metal_prefix_hash(loaded: LoadedManifest, name: str) -> str:
    """The prefix hash of toolchain `name` on a macOS runner: bootstrap folder, shared
    scripts, patches and pins. Missing files hash as None, so `plan` can key host
    cells of a checkout without images/metal-runner; `plan_metal_prefix` refuses it."""
    toolchain = loaded.manifest.toolchains[name]
    folder = loaded.root / METAL_RUNNER
    _, patch_digests = staged_patches(loaded, toolchain)
    env = metal_env(name, toolchain)
    inputs = {
        "recipe": RECIPE_VERSION,
        "runner": context_digests(folder) if folder.is_dir() else None,
        "shared": [
            [path, file_sha256(loaded.root / path) if (loaded.root / path).is_file() else None] for path in METAL_SHARED
        ],
        "patches": sorted(patch_digests.items()),
        "args": {k: v for k, v in env.items() if k != "TOOLCHAIN"},
    }
    return hashlib.sha256(canonical(inputs)).hexdigest()[:24]
