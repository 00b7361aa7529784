"""The store's contract: bundle manifests, the index, release manifests and signed
envelopes, as frozen, typed documents (one module each), with one way to parse them
(`parse`, `read_file`) and one way to write them (`body`, the canonical bytes).

Build, publish, pull, release, verify, mirror and gc import them from here."""

from __future__ import annotations

from factory.store.documents.base import (
    BUNDLE_MANIFEST,
    BUNDLE_SCHEMA,
    INDEX,
    INDEX_PAYLOAD,
    INDEX_SCHEMA,
    RELEASE_PAYLOAD,
    RELEASE_SCHEMA,
    SIGNED_SCHEMA,
    STORED_BUNDLE_FIX,
    DocumentError,
    TopDocument,
    bundle_doc_key,
    parse,
    read_file,
    release_doc_key,
)
from factory.store.documents.bundle import BundleFile, BundleManifest, Compatibility
from factory.store.documents.index import BundleEntry, Index, IndexRecord, ReleaseEntry, ReleaseRef
from factory.store.documents.release import ParitySummary, ReleaseBundle, ReleaseManifest, SmokeFigures
from factory.store.documents.signed import Signature, SignedEnvelope, is_envelope, pae

# `factory schema --document NAME` prints these documents' JSON Schemas.
STORE_DOCUMENTS: dict[str, type[TopDocument]] = {
    "bundle": BundleManifest,
    "index": Index,
    "release": ReleaseManifest,
    "signed": SignedEnvelope,
}

__all__ = [
    "BUNDLE_MANIFEST",
    "BUNDLE_SCHEMA",
    "INDEX",
    "INDEX_PAYLOAD",
    "INDEX_SCHEMA",
    "RELEASE_PAYLOAD",
    "RELEASE_SCHEMA",
    "SIGNED_SCHEMA",
    "STORED_BUNDLE_FIX",
    "STORE_DOCUMENTS",
    "BundleEntry",
    "BundleFile",
    "BundleManifest",
    "Compatibility",
    "DocumentError",
    "Index",
    "IndexRecord",
    "ParitySummary",
    "ReleaseBundle",
    "ReleaseEntry",
    "ReleaseManifest",
    "ReleaseRef",
    "Signature",
    "SignedEnvelope",
    "SmokeFigures",
    "TopDocument",
    "bundle_doc_key",
    "is_envelope",
    "pae",
    "parse",
    "read_file",
    "release_doc_key",
]
