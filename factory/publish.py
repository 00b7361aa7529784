"""`factory publish`: blobs first (only the missing ones, each hashed while it is read
for the upload), then bundle manifests, then the index, so nothing appears in the index
before its bytes are verified in place and re-running an interrupted publish finishes it."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from .bundle import sha256_file
from .documents import BUNDLE_MANIFEST, BundleManifest, Index, IndexRecord, read_file
from .errors import FactoryError, InputError, Problem
from .integrity import check_bundle_dir, hash_mismatch
from .storage.base import PreconditionFailed, Store, TransferCancelled
from .store_index import bundle_doc_key, update_index
from .transfer_progress import byte_progress


@dataclass(frozen=True)
class PublishReport:
    bundles: tuple[str, ...]
    uploaded_blobs: int
    uploaded_bytes: int
    present_blobs: int


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
    manifests = [(d, _load(d)) for d in bundle_dirs]
    versions = [_version(manifest, bundle_dir) for bundle_dir, manifest in manifests]
    blobs: dict[str, tuple[Path, int]] = {}
    for bundle_dir, manifest in manifests:
        for entry in manifest.files:
            blobs.setdefault(entry.sha256, (bundle_dir / entry.path, entry.size))
    missing = store.missing_blobs(set(blobs))
    total = sum(blobs[d][1] for d in missing)
    _send_and_check(store, blobs, missing, total, jobs)
    names = []
    entries: dict[str, tuple[str, IndexRecord]] = {}
    for (_, manifest), version in zip(manifests, versions, strict=True):
        body = manifest.body()
        key = bundle_doc_key(manifest.name, version)
        put_once(store, key, body, manifest.name, version)
        entries[manifest.name] = (version, index_record(key, body, manifest))
        names.append(manifest.name)
    if index:
        add_to_index(store, entries)
    return PublishReport(tuple(names), len(missing), total, len(blobs) - len(missing))


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


def put_once(store: Store, key: str, body: bytes, name: str, version: str) -> None:
    """Bundle manifests are immutable: the same bytes again is a no-op, other bytes a refusal."""
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
