"""Ed25519 keys and signatures for store metadata, through the `cryptography` package.

A private key is a PKCS#8 PEM file (mode 0600, never printed). A public key is one
line, `ed25519:BASE64` of its 32 raw bytes, that users paste into a trust list. A
key's id is the first 16 hex digits of the sha256 of those raw bytes. Signatures
cover DSSE's pre-authentication encoding of the exact payload bytes
(documents.pae), so no JSON canonicalisation is trusted.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from factory.errors import UsageError
from factory.store.documents import Signature, SignedEnvelope, pae

PUBLIC_PREFIX = "ed25519:"
SIGNING_KEY_ENV = "FACTORY_SIGNING_KEY"


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def public_text(public: Ed25519PublicKey) -> str:
    return PUBLIC_PREFIX + base64.b64encode(_raw(public)).decode()


@dataclass(frozen=True)
class PublicKey:
    keyid: str
    text: str
    key: Ed25519PublicKey

    def verifies(self, payload_type: str, payload: bytes, signature: str) -> bool:
        try:
            self.key.verify(base64.b64decode(signature, validate=True), pae(payload_type, payload))
        except (InvalidSignature, ValueError):
            return False
        return True


def parse_public(text: str, *, where: str) -> PublicKey:
    value = text.strip()
    fix = f"a trusted key is one line `{PUBLIC_PREFIX}BASE64`, as `factory keygen` prints it"
    if not value.startswith(PUBLIC_PREFIX):
        raise UsageError(f"{where}: {value[:40]!r} is not an ed25519 public key", hint=fix)
    try:
        raw = base64.b64decode(value[len(PUBLIC_PREFIX) :], validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise UsageError(f"{where}: {value[:40]!r} is not a valid ed25519 public key", hint=fix) from None
    return PublicKey(key_id(key), public_text(key), key)


@dataclass(frozen=True)
class Signer:
    keyid: str
    key: Ed25519PrivateKey

    def envelope(self, payload_type: str, payload: bytes) -> SignedEnvelope:
        sig = self.key.sign(pae(payload_type, payload))
        return SignedEnvelope.model_validate(
            {
                "schema": "factory.signed/v1",
                "payloadType": payload_type,
                "payload": base64.b64encode(payload).decode(),
                "signatures": [Signature(keyid=self.keyid, sig=base64.b64encode(sig).decode()).to_data()],
            }
        )


def load_signer(value: str, *, where: str = SIGNING_KEY_ENV) -> Signer:
    """A signer from a PEM private key given as its text or as a file path."""
    fix = f"set {SIGNING_KEY_ENV} to the private key file `factory keygen` wrote, or to its PEM text"
    if "-----BEGIN" in value:
        pem, origin = value.encode(), where
    else:
        path = Path(value).expanduser()
        try:
            pem, origin = path.read_bytes(), str(path)
        except OSError as exc:
            raise UsageError(f"{where}: cannot read the signing key {path}: {exc.strerror or exc}", hint=fix) from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise UsageError(f"{origin}: not an unencrypted PEM private key", hint=fix) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{origin}: the signing key is not an ed25519 key", hint=fix)
    return Signer(key_id(key.public_key()), key)


def signer_from_env() -> Signer | None:
    """The signer FACTORY_SIGNING_KEY configures (a file path or the PEM text), if any."""
    value = os.environ.get(SIGNING_KEY_ENV, "").strip()
    return load_signer(value) if value else None


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    public: str
    keyid: str


def keygen(private_path: Path, *, force: bool = False) -> KeyPair:
    """A new ed25519 key pair: PRIVATE (0600, created exclusively) and PRIVATE.pub."""
    public_path = private_path.with_name(private_path.name + ".pub")
    if not force and (private_path.exists() or public_path.exists()):
        raise UsageError(
            f"{private_path} already exists", hint="choose another path, or pass --force to replace that key pair"
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = private_path.with_name(f".{private_path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        os.replace(tmp, private_path)
    finally:
        tmp.unlink(missing_ok=True)
    public = public_text(key.public_key())
    public_path.write_text(public + "\n")
    return KeyPair(private_path, public_path, public, key_id(key.public_key()))


def expiry_after(days: float) -> str:
    """A UTC time `days` from now, as signed indexes write `expires`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + days * 86400))
