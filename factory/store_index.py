"""Reading and writing the store's documents: bundle manifests under bundles/, release
manifests under releases/, and index.json (what is current), which is written last and
only with a conditional write, so concurrent publishers never lose each other's entries."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable

from .documents import (
    INDEX,
    STORED_BUNDLE_FIX,
    BundleManifest,
    DocumentError,
    Index,
    IndexRecord,
    bundle_doc_key,
    parse,
)
from .errors import FactoryError, Problem
from .integrity import IntegrityError
from .storage.base import PreconditionFailed, Store, StoreError

__all__ = ["INDEX", "bundle_doc_key", "published_build_keys", "read_bundle_manifest", "read_index", "update_index"]


def read_index(store: Store) -> tuple[Index, str | None]:
    """The index (empty when the store has none yet) and its etag for a conditional write."""
    doc = store.get_doc(INDEX)
    if doc is None:
        return Index.empty(), None
    return parse(Index, doc.data, where=f"{store.url}/{INDEX}"), doc.etag


def update_index(store: Store, change: Callable[[Index], Index], *, attempts: int = 20) -> Index:
    """Read, change, write with If-Match (If-None-Match when new); on a lost race,
    read again and re-apply the change. Returns the index as written."""
    for attempt in range(attempts):
        index, etag = read_index(store)
        changed = change(index)
        try:
            if etag is None:
                store.put_doc(INDEX, changed.body(), if_none_match=True)
            else:
                store.put_doc(INDEX, changed.body(), if_match=etag)
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
