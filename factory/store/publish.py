"""`factory publish`: blobs first (only the missing ones, each hashed while it is read
for the upload), then bundle manifests, then the index, so nothing appears in the index
before its bytes are verified in place and re-running an interrupted publish finishes it.

A bundle's identity is its build key. A version already published from the same
build key is not published again, whatever its bytes: the build time, the host, the
measured gate figures and a non-reproducible compiler's output may all differ on a
fresh runner, and none of that makes it another bundle. The stored manifest stays,
and the index points at it. The same version from another build key is refused."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from factory.errors import FactoryError, InputError, Problem
from factory.store.backends.base import PreconditionFailed, Store, TransferCancelled
from factory.store.bundle_folder import sha256_file
from factory.store.documents import (
    BUNDLE_MANIFEST,
    STORED_BUNDLE_FIX,
    BundleManifest,
    Index,
    IndexRecord,
    parse,
    read_file,
)
from factory.store.index import bundle_doc_key, check_index_writable, update_index
from factory.store.integrity import check_bundle_dir, hash_mismatch
from factory.store.transfer_progress import byte_progress
from factory.trust.signing import signer_from_env


@dataclass(frozen=True)
class PublishReport:
    bundles: tuple[str, ...]
    uploaded_blobs: int
    uploaded_bytes: int
    present_blobs: int
    already: tuple[str, ...] = ()
    """Bundles whose version was already published from the same build key: left as they were."""


def _load(bundle_dir: Path) -> BundleManifest:
    if not (bundle_dir / BUNDLE_MANIFEST).is_file():
        raise InputError(
            [
                Problem(
                    file=str(bundle_dir),
                    field="",
                    message=f"not a bundle (no {BUNDLE_MANIFEST})",
                    fix="give folders `factory build` wrote under --out",
                )
            ]
        )
    manifest = read_file(BundleManifest, bundle_dir / BUNDLE_MANIFEST)
    check_bundle_dir(bundle_dir, manifest, hashes=False)  # hashed below, while uploading
    return manifest


def publish(store: Store, bundle_dirs: list[Path], *, jobs: int = 8, index: bool = True) -> PublishReport:
    """Blobs, then manifests, then (unless `index` is off: release jobs leave that to
    `factory release`) the index entries."""
    loaded = [(d, _load(d)) for d in bundle_dirs]
    versions = [_version(manifest, bundle_dir) for bundle_dir, manifest in loaded]
    stored = {m.name: _published(store, m, v) for (_, m), v in zip(loaded, versions, strict=True)}
    manifests = [(d, m) for d, m in loaded if stored[m.name] is None]
    blobs: dict[str, tuple[Path, int]] = {}
    for bundle_dir, manifest in manifests:
        for entry in manifest.files:
            blobs.setdefault(entry.sha256, (bundle_dir / entry.path, entry.size))
    if index:
        check_index_writable(store, signer_from_env())
    missing = store.missing_blobs(set(blobs))
    total = sum(blobs[d][1] for d in missing)
    _send_and_check(store, blobs, missing, total, jobs)
    names = []
    entries: dict[str, tuple[str, IndexRecord]] = {}
    for (_, local), version in zip(loaded, versions, strict=True):
        key = bundle_doc_key(local.name, version)
        previous = stored[local.name]
        if previous is None:
            previous = _put_bundle(store, key, local.body(), local, version)
        # What the index records is what the store holds: the first publisher's manifest.
        body, manifest = previous if previous is not None else (local.body(), local)
        entries[manifest.name] = (version, index_record(key, body, manifest))
        names.append(manifest.name)
    if index:
        add_to_index(store, entries)
    already = tuple(name for name, found in stored.items() if found is not None)
    return PublishReport(tuple(names), len(missing), total, len(blobs) - len(missing), already)


def _published(store: Store, manifest: BundleManifest, version: str) -> tuple[bytes, BundleManifest] | None:
    """The stored manifest of this bundle version when it was published from the same
    build key (nothing to do), None when the version is not published yet; another build
    key at that version is refused before any byte is uploaded."""
    key = bundle_doc_key(manifest.name, version)
    current = store.get_doc(key)
    if current is None:
        return None
    found = parse(BundleManifest, current.data, where=f"{store.url}/{key}", fix=STORED_BUNDLE_FIX)
    if current.data == manifest.body() or (manifest.build_key and found.build_key == manifest.build_key):
        return current.data, found
    raise FactoryError(
        f"{store.url}/{key}: {manifest.name} version {version} is already published from build key "
        f"{found.build_key or '(none)'}; this bundle comes from build key {manifest.build_key or '(none)'}",
        hint="bump release.version in the manifest (published versions never change), or yank the old one",
    )


def _send_and_check(store: Store, blobs: dict[str, tuple[Path, int]], missing: set[str], total: int, jobs: int) -> None:
    """Upload the missing blobs, each hashed while it is read for sending (the store refuses
    one whose bytes do not match before it exists), and hash the blobs the store already has
    in the same pool, so a damaged bundle is refused either way. Returns once every blob is
    verified in place; the first failure stops the rest and is raised."""
    with byte_progress("publish", total) as advance:
        lock = threading.Lock()
        cancel = threading.Event()

        def locked(amount: int) -> None:
            if cancel.is_set():
                raise TransferCancelled
            with lock:
                advance(amount)

        def upload(digest: str) -> None:
            store.put_blob(digest, blobs[digest][0], locked)

        def check(digest: str) -> None:
            if cancel.is_set():
                raise TransferCancelled
            if sha256_file(blobs[digest][0]) != digest:
                raise hash_mismatch(blobs[digest][0])

        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            # Largest uploads first (as in pull); local checks of present blobs fill the gaps.
            order = sorted(missing, key=lambda d: (-blobs[d][1], d))
            futures = [pool.submit(upload, d) for d in order]
            futures += [pool.submit(check, d) for d in sorted(set(blobs) - missing)]
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
            if failed:
                cancel.set()
                wait(futures)
                errors = [f.exception() for f in futures if f.done() and not f.cancelled()]
                raise next(e for e in errors if e is not None and not isinstance(e, TransferCancelled))
        finally:
            cancel.set()  # also on Ctrl-C in this thread: transfers stop at their next block
            pool.shutdown(wait=True, cancel_futures=True)


def index_record(key: str, body: bytes, manifest: BundleManifest) -> IndexRecord:
    """What the index says about one published bundle version."""
    return IndexRecord(
        manifest=key,
        sha256=hashlib.sha256(body).hexdigest(),
        build_key=manifest.build_key,
        compatibility=manifest.compatibility,
        size=manifest.size,
        published_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        yanked=False,
    )


def add_to_index(
    store: Store, entries: dict[str, tuple[str, IndexRecord]], extra: Callable[[Index], Index] | None = None
) -> Index:
    def add(index: Index) -> Index:
        index = index.with_bundles(entries)
        return extra(index) if extra is not None else index

    return update_index(store, add)


def _version(manifest: BundleManifest, bundle_dir: Path) -> str:
    if not manifest.version:
        raise InputError(
            [
                Problem(
                    file=str(bundle_dir / BUNDLE_MANIFEST),
                    field="provenance.release.version",
                    message="the bundle has no release version",
                    fix="rebuild it with a manifest that sets release.version",
                )
            ]
        )
    return manifest.version


def _put_bundle(
    store: Store, key: str, body: bytes, manifest: BundleManifest, version: str
) -> tuple[bytes, BundleManifest] | None:
    """Write a bundle manifest if its key is free. If another publisher wrote it meanwhile,
    its manifest is returned when the build key is the same; another key is refused."""
    try:
        store.put_doc(key, body, if_none_match=True)
    except PreconditionFailed:
        return _published(store, manifest, version)
    return None


def put_once(store: Store, key: str, body: bytes, name: str, version: str) -> None:
    """Immutable documents (release manifests): the same bytes again is a no-op, other bytes a refusal."""
    current = store.get_doc(key)
    if current is not None:
        if current.data == body:
            return
        raise FactoryError(
            f"{store.url}/{key}: {name} version {version} is already published with other contents",
            hint="bump release.version in the manifest (published versions never change), or yank the old one",
        )
    try:
        store.put_doc(key, body, if_none_match=True)
    except PreconditionFailed:
        put_once(store, key, body, name, version)
