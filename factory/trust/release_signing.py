"""Detached signatures of release manifests: releases/NAME/VERSION.signed.json holds a
signed envelope whose payload is exactly the release manifest's stored bytes (the
index, itself signed, records their sha256 too). Ed25519 signatures are deterministic,
so rerunning a release with the same key writes the same bytes."""

from __future__ import annotations

import hashlib

from factory.errors import BadSignature
from factory.store.backends.base import Store
from factory.store.documents import RELEASE_PAYLOAD, Index, SignedEnvelope, parse
from factory.trust.policy import Trust, check_envelope
from factory.trust.signing import Signer


def release_signature_key(manifest_key: str) -> str:
    """releases/NAME/VERSION.json -> releases/NAME/VERSION.signed.json"""
    return manifest_key.removesuffix(".json") + ".signed.json"


def sign_release(store: Store, manifest_key: str, body: bytes, signer: Signer) -> bytes:
    """Store the signed envelope of the release manifest's bytes beside it; returns it."""
    envelope = signer.envelope(RELEASE_PAYLOAD, body).body()
    store.put_doc(release_signature_key(manifest_key), envelope)
    return envelope


def check_release_signatures(store: Store, index: Index, trust: Trust) -> int:
    """Every release manifest's signature (where one is stored) against the trusted keys
    and the sha256 the index records; returns how many were checked."""
    checked = 0
    for release in index.releases.values():
        for ref in release.versions.values():
            key = release_signature_key(ref.manifest)
            doc = store.get_doc(key)
            if doc is None:
                continue
            where = f"{store.url}/{key}"
            envelope = parse(SignedEnvelope, doc.data, where=where)
            payload = check_envelope(envelope, trust, where=where)
            if envelope.payload_type != RELEASE_PAYLOAD or hashlib.sha256(payload).hexdigest() != ref.sha256:
                raise BadSignature(
                    f"{where}: signs other bytes than the release manifest the index lists",
                    hint="rerun `factory release` with the signing key",
                )
            checked += 1
    return checked
