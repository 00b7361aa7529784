"""What `factory images` does with a manifest: choose its toolchains, make sure each
image exists (built, or pulled from a registry cache) and push it, list the engine's
images against the manifest, and stage a macOS runner's native build."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from factory.errors import InputError, Problem
from factory.manifest.load import load_manifest
from factory.manifest.locked import load_locked
from factory.manifest.model import Manifest
from factory.toolchains.images.builder import BuildExtras, BuildLog, ImageRow


def choose_toolchains(manifest: Manifest, chosen: list[str], matrix: Path) -> list[str]:
    """The toolchains asked for (all, when none are), refusing names the manifest lacks."""
    unknown = [name for name in chosen if name not in manifest.toolchains]
    if unknown:
        raise InputError(
            [
                Problem(
                    file=str(matrix),
                    field="toolchains",
                    message=f"no toolchain named {name!r}",
                    fix=f"choose one of: {', '.join(sorted(manifest.toolchains))}",
                )
                for name in unknown
            ]
        )
    return chosen or sorted(manifest.toolchains)


@dataclass(frozen=True)
class ImageResult:
    toolchain: str
    ref: str
    built: bool
    pushed: str | None


def build_images(
    matrix: Path, chosen: list[str], extras: BuildExtras, *, registry: str | None, push: str | None,
    session: Callable[[str], AbstractContextManager[BuildLog]], warn: Callable[[str], None],
) -> Iterator[ImageResult]:  # fmt: skip
    """Each chosen toolchain's image, unless its content tag is already there (locally,
    or in `registry`); `session(name)` gives the log of one toolchain's build."""
    from factory.runners.engine import docker_client
    from factory.toolchains.images.builder import check_extras, ensure_image, plan_for_engine, push_image

    loaded, lock = load_locked(matrix, require_locked=False)
    names = choose_toolchains(loaded.manifest, chosen, matrix)
    check_extras(extras)
    client = docker_client()
    for name in names:
        image = plan_for_engine(client, loaded, name, lock)
        if not image.base_locked:
            base = loaded.manifest.toolchains[name].base_image
            warn(f"{name}: base image {base} is not locked; using the local copy")
        with session(name) as log:
            outcome = ensure_image(client, image, extras, log, registry)
            pushed = push_image(client, image, push, log) if push else None
        yield ImageResult(toolchain=name, ref=outcome.ref, built=outcome.built, pushed=pushed)


@dataclass(frozen=True)
class ImageListing:
    rows: tuple[ImageRow, ...]
    missing: tuple[str, ...]
    """Toolchains of the manifest with no image for its current tag."""


def list_toolchain_images(matrix: Path | None) -> ImageListing:
    """The engine's toolchain images; against a manifest, each marked current or stale."""
    from factory.runners.engine import docker_client
    from factory.toolchains.images.builder import list_images, local_image_id, missing_toolchains
    from factory.toolchains.images.plan import plan_image

    client = docker_client()
    if matrix is None:
        return ImageListing(rows=tuple(list_images(client)), missing=())
    loaded, lock = load_locked(matrix, require_locked=False)
    current: dict[str, str] = {}
    for name, chain in loaded.manifest.toolchains.items():
        local_base = local_image_id(client, chain.base_image)
        if lock.image_digest(chain.base_image) or local_base:
            current[name] = plan_image(loaded, name, lock, local_base_id=local_base).tag
    rows = list_images(client, current)
    return ImageListing(rows=tuple(rows), missing=tuple(missing_toolchains(rows, current)))


def metal_exports(matrix: Path, toolchain: str, prefix_root: Path | None = None) -> dict[str, str]:
    """The variables images/metal-runner/bootstrap.sh reads, with the patches it
    applies copied under the prefix root (default ~/.cache/factory/toolchains)."""
    from factory.paths import prefix_root as default_prefix_root
    from factory.toolchains.images.plan import plan_metal_prefix

    prefix_root = prefix_root or default_prefix_root()

    loaded = load_manifest(matrix)
    choose_toolchains(loaded.manifest, [toolchain], matrix)
    prefix = plan_metal_prefix(loaded, toolchain)
    env = {**prefix.env, "FACTORY_PREFIX_ROOT": str(prefix_root)}
    if prefix.patches:
        patch_dir = prefix_root / f"patches-{prefix.hash}"
        for dest, source in prefix.patches:
            (patch_dir / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, patch_dir / dest)
        env["PATCH_DIR"] = str(patch_dir)
    return env
