"""Signed documents in DSSE's shape, and the bytes a signature covers."""

from __future__ import annotations

import base64
import json
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from factory.store.documents.base import SIGNED_SCHEMA, Document, TopDocument


class Signature(Document):
    keyid: str = Field(description="the first 16 hex digits of the sha256 of the raw ed25519 public key")
    sig: str = Field(description="base64 ed25519 signature of the envelope's pre-authentication encoding")


class SignedEnvelope(TopDocument):
    """A signed document (index.json when a signing key is configured, and
    releases/NAME/VERSION.signed.json): DSSE's shape, so the signed bytes are exactly
    the payload and no JSON canonicalisation is trusted."""

    schema_name: ClassVar[str] = SIGNED_SCHEMA
    label: ClassVar[str] = "signed envelope"
    schema_version: Literal["factory.signed/v1"] = Field(alias="schema")
    payload_type: Literal["application/vnd.factory.index+json", "application/vnd.factory.release+json"] = Field(
        alias="payloadType"
    )
    payload: str = Field(description="base64 of the signed document's bytes")
    signatures: tuple[Signature, ...]

    def payload_bytes(self) -> bytes:
        return base64.b64decode(self.payload, validate=True)

    @model_validator(mode="after")
    def _payload_is_base64(self) -> Self:
        try:
            self.payload_bytes()
        except ValueError:
            raise ValueError("payload is not base64") from None
        return self


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a signature covers (type and bytes, with lengths)."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def is_envelope(data: bytes) -> bool:
    """Whether stored bytes look like a signed envelope (the schema decides; parse checks the rest)."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(raw, dict) and raw.get("schema") == SIGNED_SCHEMA
