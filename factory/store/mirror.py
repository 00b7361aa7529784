"""`factory mirror SRC DST`: copy bundles between any two stores, keeping them verifiable.

Order, as publish: blobs DST lacks (each downloaded into a private temporary file,
hashed and sized as it arrives, then uploaded; in parallel), then the bundle and
release manifests and release signatures byte for byte, then DST's index with a
conditional write. A signed source index travels verbatim (a mirror holds no key and
cannot forge one), so clients verify the mirror with the origin's key. Every step
skips what DST already has, so rerunning after a kill resumes, and DST's index
changes last and atomically, so clients pulling meanwhile see the old or new state.
"""

from __future__ import annotations

import fnmatch
import hashlib
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from factory.errors import FactoryError, IntegrityError, UsageError
from factory.store.backends.base import PreconditionFailed, Store, TransferCancelled
from factory.store.documents import INDEX, Index, ReleaseManifest, bundle_doc_key, is_envelope, parse
from factory.store.index import read_bundle_manifest
from factory.store.mirror_index import merge_index
from factory.store.transfer_progress import byte_progress
from factory.trust.policy import Trust, check_index
from factory.trust.release_signing import release_signature_key


@dataclass(frozen=True)
class MirrorReport:
    bundles: tuple[str, ...]
    """NAME@VERSION of every bundle version mirrored."""
    copied_blobs: int
    copied_bytes: int
    present_blobs: int
    documents: int
    """Manifests and signatures written (the ones DST lacked)."""
    index: str
    """What happened to DST's index: written, unchanged, or kept (DST's is newer)."""


@dataclass(frozen=True)
class Selection:
    bundles: tuple[tuple[str, str], ...]
    releases: tuple[tuple[str, str], ...]


def select(store: Store, index: Index, *, only: Sequence[str], release: str | None) -> Selection:
    """Bundle versions of `index` to copy: all, those whose MODEL/QUANT/TARGET matches an
    --only glob, or those of one release (NAME or NAME@VERSION)."""
    if release is not None:
        name, _, version = release.partition("@")
        entry = index.releases.get(name)
        version = version or (entry.latest if entry else None) or ""
        if entry is None or version not in entry.versions:
            known = ", ".join(f"{n}@{v}" for n, e in sorted(index.releases.items()) for v in e.versions) or "none"
            raise UsageError(f"{store.url} has no release {release}", hint=f"releases there: {known}")
        ref = entry.versions[version]
        doc = store.get_doc(ref.manifest)
        if doc is None or hashlib.sha256(doc.data).hexdigest() != ref.sha256:
            message = f"{store.url}/{ref.manifest}: missing or not what the index lists"
            raise IntegrityError(message, hint="rerun `factory release`")
        manifest = parse(ReleaseManifest, doc.data, where=f"{store.url}/{ref.manifest}")
        picked = tuple(sorted((b.name, _version_of(b.manifest, b.name)) for b in manifest.bundles))
        return Selection(picked, ((name, version),))
    picked = tuple(
        sorted(
            (name, version)
            for name, entry in index.bundles.items()
            for version in entry.versions
            if not only or any(fnmatch.fnmatchcase(name, glob) for glob in only)
        )
    )
    if only and not picked:
        raise UsageError(f"--only {' '.join(only)} matches no bundle in {store.url}", hint="`factory ls` lists them")
    releases = tuple(sorted((n, v) for n, e in index.releases.items() for v in e.versions)) if not only else ()
    return Selection(picked, releases)


def _version_of(key: str, name: str) -> str:
    """bundles/NAME/VERSION.json -> VERSION (the release manifest checked the shape)."""
    return key.removeprefix(f"bundles/{name}/").removesuffix(".json")


def mirror(
    src: Store,
    dst: Store,
    *,
    only: Sequence[str] = (),
    release: str | None = None,
    trust: Trust | None = None,
    jobs: int = 8,
) -> MirrorReport:
    # The source's index is read once: what is selected, copied and finally written to DST
    # all come from these bytes, even if the source is published to meanwhile.
    source = src.get_doc(INDEX)
    if source is None:
        raise UsageError(f"{src.url} has no index: nothing to mirror", hint="check the source URL")
    index = check_index(src.url, source.data, trust)
    chosen = select(src, index, only=only, release=release)
    manifests = [read_bundle_manifest(src, n, v, index.bundles[n].versions[v]) for n, v in chosen.bundles]
    blobs: dict[str, int] = {}
    for manifest, _ in manifests:
        blobs.update(manifest.blobs())
    missing = dst.missing_blobs(set(blobs))
    copied = _copy_blobs(src, dst, {d: blobs[d] for d in missing}, jobs)
    documents = 0
    for (name, version), (_, body) in zip(chosen.bundles, manifests, strict=True):
        documents += _copy_doc(dst, bundle_doc_key(name, version), body)
    for name, version in chosen.releases:
        ref = index.releases[name].versions[version]
        for key in (ref.manifest, release_signature_key(ref.manifest)):
            doc = src.get_doc(key)
            if doc is not None:
                documents += _copy_doc(dst, key, doc.data)
    outcome = merge_index(source.data, index, dst, set(chosen.bundles), set(chosen.releases))
    left = sum(len(e.versions) for e in index.bundles.values()) - len(chosen.bundles)
    if is_envelope(source.data) and left:
        # A mirror cannot sign a smaller index: the origin's lists what was not copied.
        outcome += f"; the signed index lists {left} bundle version(s) not copied (pulls of those fail as missing)"
    names = tuple(f"{n}@{v}" for n, v in chosen.bundles)
    return MirrorReport(names, len(missing), copied, len(blobs) - len(missing), documents, outcome)


def _copy_doc(dst: Store, key: str, body: bytes) -> int:
    """Write `body` at `key` unless DST has it; DST holding other bytes there is refused."""
    current = dst.get_doc(key)
    if current is not None:
        if current.data == body or (is_envelope(body) and key.endswith(".signed.json")):
            return 0
        raise FactoryError(
            f"{dst.url}/{key} holds other contents than the source's",
            hint="the destination published its own bundle under that version; mirror into another store or prefix",
        )
    try:
        dst.put_doc(key, body, if_none_match=True)
    except PreconditionFailed:
        return _copy_doc(dst, key, body)
    return 1


def _copy_blobs(src: Store, dst: Store, wanted: dict[str, int], jobs: int) -> int:
    """Each blob through a private temporary file, hashed and sized on the way; the first
    failure stops every worker and is raised. Returns the bytes copied."""
    cancel = threading.Event()
    lock = threading.Lock()
    progress = byte_progress("mirror", sum(wanted.values()))
    with tempfile.TemporaryDirectory(prefix="factory-mirror-") as tmp, progress as advance:

        def moved(amount: int) -> None:
            if cancel.is_set():
                raise TransferCancelled
            with lock:
                advance(amount)

        def copy(digest: str) -> int:
            part = Path(tmp) / digest
            hasher = hashlib.sha256()
            src.get_blob(digest, part, moved, hasher)
            size = part.stat().st_size
            if size != wanted[digest] or hasher.hexdigest() != digest:
                raise IntegrityError(
                    f"{src.url}: blob {digest} arrived as {size} bytes hashing to {hasher.hexdigest()}",
                    hint="the source store is damaged: `factory verify SRC` names the bundles; republish them there",
                )
            dst.put_blob(digest, part)
            part.unlink()
            return size

        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            futures = [pool.submit(copy, d) for d in sorted(wanted, key=lambda d: (-wanted[d], d))]
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f.exception() for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
            if failed:
                cancel.set()
                wait(futures)
                raise next(e for e in failed if e is not None and not isinstance(e, TransferCancelled))
            return sum(f.result() for f in futures)
        finally:
            cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
