"""The local content-addressed blob cache that `factory pull` fills and hard-links from.

Several processes may share one cache. Each blob has its own lock file (flock, so a
killed process releases it); whoever holds it is the only writer of that blob's
`partial/<digest>.part`, and checks first whether another process already finished
the blob. A finished blob is verified, made read-only and renamed into place, so a
reader sees a whole blob or none.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from factory.errors import IntegrityError, LocalDiskError
from factory.file_lock import file_lock
from factory.store.backends.base import LocalWriteError, Progress, Store, TransferCancelled

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def blob_path(cache: Path, digest: str) -> Path:
    return cache / "blobs" / "sha256" / digest[:2] / digest[2:]


def partial_path(cache: Path, digest: str) -> Path:
    return cache / "partial" / f"{digest}.part"


def is_cached(cache: Path, digest: str, size: int) -> bool:
    """Cached blobs were verified when they arrived; a size check catches a truncated one."""
    path = blob_path(cache, digest)
    try:
        return path.stat().st_size == size and path.is_file()
    except FileNotFoundError:
        return False


def partial_size(cache: Path, digest: str) -> int:
    try:
        return partial_path(cache, digest).stat().st_size
    except FileNotFoundError:
        return 0


@contextmanager
def blob_lock(cache: Path, digest: str, cancel: threading.Event) -> Iterator[None]:
    """Hold the blob's lock, giving up (TransferCancelled) if `cancel` is set while waiting."""

    def give_up_if_cancelled() -> None:
        if cancel.is_set():
            raise TransferCancelled

    with file_lock(cache / "locks" / f"{digest}.lock", poll=give_up_if_cancelled):
        yield


@contextmanager
def folder_lock(dest: Path) -> Iterator[None]:
    """Serialise processes that make the same output folder (a lock file beside it)."""
    with file_lock(dest.parent / f".{dest.name}.lock"):
        yield


def fetch_blob(
    store: Store, cache: Path, digest: str, size: int, shown: str, advance: Progress, cancel: threading.Event
) -> int:
    """Make blob `digest` present in the cache; returns the bytes taken from the store
    (0 when another process finished it first). Resumes what an interrupted run left."""
    if cancel.is_set():
        raise TransferCancelled
    with blob_lock(cache, digest, cancel):
        if is_cached(cache, digest, size):
            advance(size)
            return 0
        partial = partial_path(cache, digest)
        try:
            partial.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(LocalWriteError(partial.parent, exc)) from None
        have = partial_size(cache, digest)
        if have > size:
            partial.unlink()
            have = 0
        # Hash what an interrupted run left, then the rest as it arrives: one pass over the bytes.
        hasher = hashlib.sha256()
        if have:
            with partial.open("rb") as existing:
                while block := existing.read(1 << 22):
                    hasher.update(block)
            advance(have)
        if have < size:
            try:
                store.get_blob(digest, partial, advance, hasher)
            except LocalWriteError as exc:
                raise disk_error(exc) from None  # the partial file stays for the next run to resume
        actual = partial.stat().st_size
        if actual != size or hasher.hexdigest() != digest:
            partial.unlink()
            raise IntegrityError(
                f"{shown}: the store's bytes (blob {digest[:16]}…, {actual} bytes) do not match the manifest "
                f"(sha256 {digest[:16]}…, {size} bytes); nothing was written",
                hint=f"the store at {store.url} holds a damaged or tampered blob; republish the bundle",
            )
        final = blob_path(cache, digest)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            # Pulled folders hard-link to the cache: read-only keeps an edit in a pulled folder
            # from silently changing the cached bytes for later pulls.
            os.chmod(partial, 0o444)
            os.replace(partial, final)
        except OSError as exc:
            raise disk_error(LocalWriteError(final, exc)) from None
        return size - have


def disk_error(exc: LocalWriteError, *, then: str = "every download was stopped") -> LocalDiskError:
    if exc.error.errno in _DISK_ERRNOS:
        return LocalDiskError(
            f"the disk is full: writing {exc.path} failed ({exc.error.strerror}); {then}",
            hint="free some space (or point --cache / FACTORY_CACHE elsewhere) and run the same command again: "
            "it resumes the partial downloads",
        )
    return LocalDiskError(
        f"cannot write {exc.path}: {exc.error.strerror or exc.error}; {then}",
        hint="check that folder's permissions and free space, or point --cache / FACTORY_CACHE elsewhere",
    )


def free_space(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or would hold it: its nearest existing parent).
    The one place pull asks the system for free space."""
    return shutil.disk_usage(existing_parent(path)).free


def existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def same_filesystem(a: Path, b: Path) -> bool:
    return existing_parent(a).stat().st_dev == existing_parent(b).stat().st_dev


def check_room(cache: Path, out: Path, *, download: int, bundle: int) -> None:
    """Refuse before the first byte when the cache cannot take `download` more bytes, or
    `out` cannot take the bundle (hard links cost nothing on the cache's filesystem; a
    bundle on another one is copied, `bundle` bytes)."""
    needs: list[tuple[Path, int, str]] = []
    if same_filesystem(cache, out):
        needs.append((cache, download, "the blobs still to download (the bundle folder hard-links to them)"))
    else:
        needs.append((cache, download, "the blobs still to download"))
        needs.append((out, bundle, "the bundle folder (copied from the cache, another filesystem)"))
    for where, need, what in needs:
        free = free_space(where)
        if need > free:
            raise LocalDiskError(
                f"not enough free space in {existing_parent(where)}: {what} need {_mb(need)}, {_mb(free)} is free; "
                "nothing was downloaded",
                hint="free some space there, or choose another place with --cache (FACTORY_CACHE) or --out",
            )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
