"""The lock file: floating references of a manifest resolved to exact ones.

A manifest may say `revision: main` or `base_image: nvidia/cuda:12.8.0-...`;
builds must not float, so `factory lock` resolves them once (HF commit,
image digest) into `<manifest>.lock`, and builds read that. References that
are already exact (a 40-hex commit, an image pinned `@sha256:`) need no entry.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factory.errors import InputError, NetworkError, Problem
from factory.manifest.model import Manifest

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class LockFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lock_version: Literal[1] = 1
    hf: dict[str, str] = Field(default_factory=dict, description="'ORG/NAME@revision' -> commit")
    images: dict[str, str] = Field(default_factory=dict, description="image reference -> sha256 digest")
    local_images: dict[str, str] = Field(
        default_factory=dict,
        description="image reference -> image id, for bases that exist only in the engine (docker load/import)",
    )


def hf_key(repo: str, revision: str) -> str:
    return f"{repo}@{revision}"


def exact_commit(revision: str) -> bool:
    return bool(_COMMIT.match(revision))


def pinned_digest(image: str) -> str | None:
    """The digest an image reference already carries (`name@sha256:...`), if any."""
    _, at, digest = image.rpartition("@")
    return digest if at and _DIGEST.match(digest) else None


@dataclass(frozen=True)
class Lock:
    hf: Mapping[str, str] = field(default_factory=dict)
    images: Mapping[str, str] = field(default_factory=dict)
    local_images: Mapping[str, str] = field(default_factory=dict)

    def hf_commit(self, repo: str, revision: str) -> str | None:
        if exact_commit(revision):
            return revision
        return self.hf.get(hf_key(repo, revision))

    def image_digest(self, image: str) -> str | None:
        return pinned_digest(image) or self.images.get(image) or self.local_images.get(image)

    def is_local(self, image: str) -> bool:
        """The base is locked by engine-local image id: it is used by name and its id checked."""
        return pinned_digest(image) is None and image not in self.images and image in self.local_images


def lock_path_for(manifest_path: Path) -> Path:
    return manifest_path.with_suffix(".lock")


def read_lock(path: Path) -> Lock:
    """The lock at `path`; an absent file is an empty lock."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Lock()
    try:
        parsed = LockFile.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"])
        raise _malformed(path, field_name, f"malformed lock file: {first['msg']}") from None
    for key, commit in parsed.hf.items():
        if not exact_commit(commit):
            raise _malformed(path, f"hf.{key}", f"{commit!r} is not a 40-hex commit")
    for section in ("images", "local_images"):
        for key, digest in getattr(parsed, section).items():
            if not _DIGEST.match(digest):
                raise _malformed(path, f"{section}.{key}", f"{digest!r} is not a sha256 digest")
    return Lock(hf=dict(parsed.hf), images=dict(parsed.images), local_images=dict(parsed.local_images))


def _malformed(path: Path, field_name: str, message: str) -> InputError:
    return InputError(
        [
            Problem(
                file=str(path),
                field=field_name,
                message=message,
                fix="regenerate it with `factory lock --matrix <manifest>`",
            )
        ]
    )


def write_lock(path: Path, lock: Lock) -> None:
    """Write atomically: a reader sees the old lock or the new one, never half of one."""
    body = LockFile(
        hf=dict(sorted(lock.hf.items())),
        images=dict(sorted(lock.images.items())),
        local_images=dict(sorted(lock.local_images.items())),
    )
    text = json.dumps(body.model_dump(), indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class FloatingRefs:
    hf: tuple[tuple[str, str], ...]
    images: tuple[str, ...]


def floating_refs(manifest: Manifest) -> FloatingRefs:
    """Every reference in the manifest that needs a lock entry, sorted."""
    # Local models need no entry: their content hash is their identity.
    hf = sorted({(m.hf.repo, m.hf.revision) for m in manifest.models if m.hf and not exact_commit(m.hf.revision)})
    images = sorted({t.base_image for t in manifest.toolchains.values() if pinned_digest(t.base_image) is None})
    return FloatingRefs(hf=tuple(hf), images=tuple(images))


def missing_entries(manifest: Manifest, lock: Lock) -> list[str]:
    refs = floating_refs(manifest)
    missing = [f"hf {hf_key(repo, rev)}" for repo, rev in refs.hf if lock.hf_commit(repo, rev) is None]
    missing += [f"image {image}" for image in refs.images if lock.image_digest(image) is None]
    return missing


class Resolver(Protocol):
    def hf_commit(self, repo: str, revision: str) -> str: ...
    def image_digest(self, image: str) -> str: ...


@dataclass(frozen=True)
class LockUpdate:
    lock: Lock
    resolved: tuple[str, ...]
    kept: tuple[str, ...]


def resolve_lock(
    manifest: Manifest, current: Lock, resolver: Resolver, *, upgrade: bool, local_images: bool = False
) -> LockUpdate:
    """Resolve what the lock lacks (everything, with `upgrade`). Entries the
    manifest no longer uses are dropped. Raises NetworkError listing every
    reference that could not be resolved; the caller then writes nothing."""
    refs = floating_refs(manifest)
    hf: dict[str, str] = {}
    images: dict[str, str] = {}
    resolved: list[str] = []
    kept: list[str] = []
    failures: list[str] = []
    for repo, revision in refs.hf:
        key = hf_key(repo, revision)
        if not upgrade and key in current.hf:
            hf[key] = current.hf[key]
            kept.append(f"hf {key}")
            continue
        try:
            commit = resolver.hf_commit(repo, revision)
        except NetworkError as exc:
            failures.append(f"hf {key}: {exc.message}")
            continue
        if not exact_commit(commit):
            failures.append(f"hf {key}: the hub answered {commit!r}, not a commit")
            continue
        hf[key] = commit
        resolved.append(f"hf {key} -> {commit}")
    section = current.local_images if local_images else current.images
    for image in refs.images:
        if not upgrade and image in section:
            images[image] = section[image]
            kept.append(f"image {image}")
            continue
        try:
            digest = resolver.image_digest(image)
        except NetworkError as exc:
            failures.append(f"image {image}: {exc.message}")
            continue
        if not _DIGEST.match(digest):
            failures.append(f"image {image}: the registry answered {digest!r}, not a digest")
            continue
        images[image] = digest
        resolved.append(f"image {image} -> {digest}")
    if failures:
        raise NetworkError(
            "could not resolve " + "; ".join(failures),
            hint="check the network, HF_ENDPOINT/HF_TOKEN and the registry; the lock file was left unchanged",
        )
    if local_images:
        # Registry digests the lock already has stay; the engine-local ids are new.
        lock = Lock(hf=hf, images={k: v for k, v in current.images.items() if k in refs.images}, local_images=images)
    else:
        lock = Lock(hf=hf, images=images)
    return LockUpdate(lock=lock, resolved=tuple(resolved), kept=tuple(kept))
