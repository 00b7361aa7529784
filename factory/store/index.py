"""Reading and writing the store's documents: bundle manifests under bundles/, release
manifests under releases/, and index.json (what is current), which is written last and
only with a conditional write, so concurrent publishers never lose each other's entries."""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable

from factory.errors import FactoryError, IntegrityError, Problem, UsageError
from factory.store.backends.base import Document, PreconditionFailed, Store, StoreError
from factory.store.documents import (
    INDEX,
    INDEX_PAYLOAD,
    STORED_BUNDLE_FIX,
    BundleManifest,
    DocumentError,
    Index,
    IndexRecord,
    SignedEnvelope,
    bundle_doc_key,
    is_envelope,
    parse,
)
from factory.trust.signing import Signer, expiry_after, signer_from_env

__all__ = ["INDEX", "bundle_doc_key", "published_build_keys", "read_bundle_manifest", "read_index", "update_index"]


def signed_validity_days() -> float:
    """How long a signed index stays valid (FACTORY_INDEX_VALIDITY_DAYS, default 30); every
    signed write renews it, so a store must be written (or re-signed) within that time."""
    text = os.environ.get("FACTORY_INDEX_VALIDITY_DAYS", "30")
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if days <= 0:
        raise UsageError(
            f"FACTORY_INDEX_VALIDITY_DAYS={text!r} is not a positive number of days", hint="e.g. 30, or unset it"
        )
    return days


def check_index_writable(store: Store, signer: Signer | None) -> None:
    """Refuse early (before any upload) to replace a signed index without a signing key."""
    doc = store.get_doc(INDEX)
    if doc is not None:
        index_body(store, Index.empty(), doc.data, signer)


def read_index(store: Store) -> tuple[Index, str | None]:
    """The index (empty when the store has none yet) and its etag for a conditional write.
    A signed index is unwrapped unchecked: writers re-sign, readers that trust keys use
    trust.open_index instead."""
    doc = store.get_doc(INDEX)
    if doc is None:
        return Index.empty(), None
    return _decode(store, doc), doc.etag


def _decode(store: Store, doc: Document) -> Index:
    where = f"{store.url}/{INDEX}"
    if is_envelope(doc.data):
        envelope = parse(SignedEnvelope, doc.data, where=where)
        return parse(Index, envelope.payload_bytes(), where=where)
    return parse(Index, doc.data, where=where)


def index_body(store: Store, index: Index, previous: bytes | None, signer: Signer | None) -> bytes:
    """The bytes to store: signed (next version, renewed expiry) when a signer is given;
    a signed index is never replaced by an unsigned one."""
    if signer is None:
        if previous is not None and is_envelope(previous):
            raise UsageError(
                f"{store.url}/{INDEX} is signed; writing it unsigned would lock out every client that checks it",
                hint="set FACTORY_SIGNING_KEY to the store's signing key (a file path or the PEM text)",
            )
        return index.body()
    version = (index.version or 0) + 1
    signed = index.with_signing_terms(version, expiry_after(signed_validity_days()))
    return signer.envelope(INDEX_PAYLOAD, signed.body()).body()


def update_index(
    store: Store, change: Callable[[Index], Index], *, attempts: int = 20, signer: Signer | None = None
) -> Index:
    """Read, change, write with If-Match (If-None-Match when new); on a lost race,
    read again and re-apply the change. Returns the index as written. Signed with
    `signer`, else with FACTORY_SIGNING_KEY's key when that is set."""
    signer = signer or signer_from_env()
    for attempt in range(attempts):
        doc = store.get_doc(INDEX)
        index, etag = (_decode(store, doc), doc.etag) if doc is not None else (Index.empty(), None)
        changed = change(index)
        try:
            body = index_body(store, changed, doc.data if doc is not None else None, signer)
            if etag is None:
                store.put_doc(INDEX, body, if_none_match=True)
            else:
                store.put_doc(INDEX, body, if_match=etag)
            return changed
        except PreconditionFailed:
            time.sleep(min(0.05 * (2**attempt), 1.0) * random.random())
    raise FactoryError(
        f"{store.url}/{INDEX}: gave up after {attempts} conflicting writes",
        hint="another publisher keeps writing the index; run the command again",
    )


def read_bundle_manifest(store: Store, name: str, version: str, record: IndexRecord) -> tuple[BundleManifest, bytes]:
    """The bundle manifest an index record points at, checked against the record's sha256."""
    key = bundle_doc_key(name, version)  # the layout's key; the index's was checked to be the same
    where = f"{store.url}/{key}"
    doc = store.get_doc(key)
    if doc is None:
        raise StoreError(
            f"{where}: listed in the index but missing",
            hint="publish that bundle again (`factory publish`), or yank the version",
        )
    if hashlib.sha256(doc.data).hexdigest() != record.sha256:
        raise IntegrityError(
            f"{where}: the bundle manifest does not match the index (sha256)",
            hint="the store was changed by hand or tampered with; publish the bundle again",
        )
    manifest = parse(BundleManifest, doc.data, where=where, fix=STORED_BUNDLE_FIX)
    if manifest.name != name:
        problem = Problem(
            file=where, field="name", message=f"names {manifest.name!r}, the index lists it as {name!r}",
            fix="publish the bundle again",
        )  # fmt: skip
        raise DocumentError([problem])
    return manifest, doc.data


def published_build_keys(store: Store) -> set[str]:
    """Build keys of every bundle version the index lists (a build skips those)."""
    index, _ = read_index(store)
    return index.build_keys()
