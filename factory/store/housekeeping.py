"""Store housekeeping: verify every byte, collect unreferenced blobs, yank versions."""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from factory.errors import FactoryError, IntegrityError, UsageError
from factory.store.backends.base import LocalWriteError, Store
from factory.store.documents import STORED_BUNDLE_FIX, BundleManifest, Index, parse
from factory.store.index import read_bundle_manifest, update_index
from factory.store.transfer_progress import item_progress
from factory.trust.policy import Trust, open_index
from factory.trust.release_signing import check_release_signatures


def referenced_blobs(store: Store) -> set[str]:
    """Every blob any bundle manifest in the store lists (yanked ones included: yank never deletes).
    A manifest that cannot be read stops gc: deleting by a partial picture could lose data."""
    digests: set[str] = set()
    for key in store.list_keys("bundles/"):
        doc = store.get_doc(key)
        if doc is not None:
            digests.update(parse(BundleManifest, doc.data, where=f"{store.url}/{key}", fix=STORED_BUNDLE_FIX).blobs())
    return digests


DEFAULT_GRACE = 24 * 3600.0
"""Unreferenced blobs younger than this are kept: a running publish uploads its blobs
before the manifests that reference them."""


@dataclass(frozen=True)
class GcReport:
    unreferenced: tuple[str, ...]
    """Unreferenced blobs old enough to delete (deleted when `deleted`)."""
    young: tuple[str, ...]
    """Unreferenced blobs kept because they are younger than the grace period."""
    deleted: bool
    grace: float


def gc(store: Store, *, delete: bool, grace: float = DEFAULT_GRACE, now: float | None = None) -> GcReport:
    """Unreferenced blobs, deleted with `delete` unless written less than `grace` seconds ago."""
    keep = referenced_blobs(store)
    now = time.time() if now is None else now
    old: dict[str, str] = {}
    young: list[str] = []
    for stored in store.list_objects("blobs/sha256/"):
        digest = stored.key.rsplit("/", 2)[-2] + stored.key.rsplit("/", 1)[-1]
        if digest in keep:
            continue
        if now - stored.modified < grace:
            young.append(digest)
        else:
            old[digest] = stored.key
    unreferenced = tuple(sorted(old))
    if delete:
        for digest in unreferenced:
            store.delete(old[digest])
    return GcReport(unreferenced, tuple(sorted(young)), delete, grace)


def parse_duration(text: str) -> float:
    """Seconds in '90s', '30m', '24h', '7d' or '0'."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    try:
        if value == "0":
            return 0.0
        if value and value[-1] in units and float(value[:-1]) >= 0:
            return float(value[:-1]) * units[value[-1]]
    except ValueError:
        pass
    raise UsageError(f"--grace {text!r} is not a duration", hint="write it like 90s, 30m, 24h, 7d, or 0 for none")


def verify_store(store: Store, trust: Trust | None = None, *, jobs: int = 8) -> tuple[int, int]:
    """Download and hash every blob every indexed bundle lists, `jobs` at a time;
    returns (bundles, blobs) checked. Each blob is fetched once, however many bundles
    share it, and every problem is reported, not only the first. With trust configured,
    the index's signature is checked first, and each release manifest's detached
    signature where it has one. On a terminal a live line shows the bytes checked, the
    speed, the time left and a blob being checked (which bundle, which file)."""
    index = open_index(store, trust)
    if trust is not None:
        check_release_signatures(store, index, trust)
    problems: list[str] = []
    # Every manifest first (small documents): the total is known before the first blob, so
    # the progress line has an end, and each blob is checked once however many bundles share it.
    todo: dict[str, tuple[str, str]] = {}
    sizes: dict[str, int] = {}
    bundles = 0
    for name, entry in sorted(index.bundles.items()):
        for version, record in sorted(entry.versions.items()):
            bundles += 1
            try:
                manifest, _ = read_bundle_manifest(store, name, version, record)
            except FactoryError as exc:
                problems.append(f"{name} {version}: {exc.render().removeprefix('error: ')}")
                continue
            for entry_file in manifest.files:
                todo.setdefault(entry_file.sha256, (f"{name} {version}", entry_file.path))
                sizes.setdefault(entry_file.sha256, entry_file.size)
    lock = threading.Lock()
    with (
        tempfile.TemporaryDirectory(prefix="factory-verify-") as tmp,
        item_progress("verify", sum(sizes.values()), len(todo)) as shown,
    ):

        def advance(amount: int) -> None:
            with lock:
                shown.advance(amount)

        def check(digest: str) -> str | None:
            bundle, path = todo[digest]
            with lock:
                shown.start(f"{bundle}: {path}")
            part = Path(tmp) / digest
            hasher = hashlib.sha256()
            try:
                store.get_blob(digest, part, advance, hasher)
            except (FactoryError, LocalWriteError) as exc:
                return f"{bundle}: {path}: {exc}"
            finally:
                with lock:
                    shown.finish()
                part.unlink(missing_ok=True)
            if hasher.hexdigest() != digest:
                return f"{bundle}: {path}: blob {digest[:16]}… is altered"
            return None

        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="verify") as pool:
            problems += [p for p in pool.map(check, sorted(todo)) if p is not None]
    if problems:
        raise IntegrityError(f"{store.url}: " + "\n    ".join(problems), hint="republish the affected bundles")
    return bundles, len(todo)


def yank(store: Store, name: str, version: str, reason: str) -> Index:
    """Mark a version withdrawn; its files stay, `pull --version` still fetches it on purpose."""

    def mark(index: Index) -> Index:
        entry = index.bundles.get(name)
        if entry is None or version not in entry.versions:
            raise UsageError(f"{store.url} has no {name} version {version}", hint="`factory ls` lists them")
        return index.with_yank(name, version, reason, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    return update_index(store, mark)
