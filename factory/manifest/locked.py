"""A manifest together with its lock (what plan, build and release read), and
`factory lock`'s update of that lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from factory.errors import InputError, Problem
from factory.manifest.load import LoadedManifest, load_manifest
from factory.manifest.lock import Lock, lock_path_for, missing_entries, read_lock, resolve_lock, write_lock
from factory.manifest.model import Manifest


def load_locked(matrix: Path, *, require_locked: bool) -> tuple[LoadedManifest, Lock]:
    """The manifest and its lock; with require_locked, every floating reference must be locked."""
    loaded = load_manifest(matrix)
    lock_path = lock_path_for(matrix)
    lock = read_lock(lock_path)
    if require_locked:
        require_complete(loaded.manifest, lock, lock_path)
    return loaded, lock


def require_complete(manifest: Manifest, lock: Lock, lock_path: Path) -> None:
    missing = missing_entries(manifest, lock)
    if missing:
        raise InputError(
            [
                Problem(
                    file=str(lock_path),
                    field=entry,
                    message="no lock entry for this floating reference",
                    fix="run `factory lock --matrix <manifest>` where the hub and registry are reachable, "
                    "or pin the exact commit/digest in the manifest",
                )
                for entry in missing
            ]
        )


@dataclass(frozen=True)
class LockUpdate:
    path: Path
    checked_only: bool
    resolved: tuple[str, ...] = ()
    kept: int = 0


def update_lock(matrix: Path, *, upgrade: bool, check: bool, local_images: bool) -> LockUpdate:
    """Resolve what the lock lacks (or everything, with upgrade) and write it; with
    check, resolve nothing and fail when an entry is missing."""
    from factory.manifest.resolvers import LocalImageResolver, OnlineResolver

    loaded, current = load_locked(matrix, require_locked=check)
    lock_path = lock_path_for(matrix)
    if check:
        return LockUpdate(path=lock_path, checked_only=True)
    resolver = LocalImageResolver() if local_images else OnlineResolver()
    update = resolve_lock(loaded.manifest, current, resolver, upgrade=upgrade, local_images=local_images)
    write_lock(lock_path, update.lock)
    return LockUpdate(path=lock_path, checked_only=False, resolved=tuple(update.resolved), kept=len(update.kept))
