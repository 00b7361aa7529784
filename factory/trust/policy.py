"""Which keys this machine trusts, and the checks a signed index must pass before any
digest in it is used: a good signature by a trusted key, not expired, not older than
the newest version this machine has seen from that store.

Trusted keys come from the first of: `--trust KEY` (repeatable), FACTORY_TRUST, the
trust file `$XDG_CONFIG_HOME/factory/trusted-keys` (else ~/.config/...). Each entry
is a key line `ed25519:...` or a path to a file of such lines (`#` starts a comment).
Several keys may be trusted at once (rotation); retiring one is deleting its line.

The newest version seen per store lives in the cache home (`trust-state/`), updated
under an flock and replaced atomically, so concurrent pulls only ever raise it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from factory.errors import BadSignature, ExpiredIndex, MissingSignature, RollbackRefused, UnknownSigner, UsageError
from factory.file_lock import file_lock
from factory.paths import cache_home
from factory.store.backends.base import Store
from factory.store.documents import INDEX, INDEX_PAYLOAD, Index, SignedEnvelope, is_envelope, parse
from factory.trust.signing import PublicKey, parse_public

TRUST_ENV = "FACTORY_TRUST"


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "factory"


def trust_file() -> Path:
    return config_home() / "trusted-keys"


@dataclass(frozen=True)
class Trust:
    keys: tuple[PublicKey, ...]
    source: str
    state_dir: Path

    def by_id(self) -> dict[str, PublicKey]:
        return {k.keyid: k for k in self.keys}


def _entries(values: Iterable[str], where: str) -> list[PublicKey]:
    keys: list[PublicKey] = []
    for raw in values:
        value = raw.strip()
        if not value:
            continue
        if value.startswith("ed25519:"):
            keys.append(parse_public(value, where=where))
            continue
        path = Path(value).expanduser()
        if not path.is_file() and ("/" in value or value.endswith(".pub")):
            raise UsageError(
                f"{where}: trusted key file {path} not found", hint="give a key line `ed25519:...` or an existing file"
            )
        lines = path.read_text().splitlines() if path.is_file() else [value]
        origin = str(path) if path.is_file() else where
        keys += [parse_public(line.split("#", 1)[0], where=origin) for line in lines if line.split("#", 1)[0].strip()]
    return keys


def load_trust(cli_keys: list[str] | None = None) -> Trust | None:
    """The trusted keys, or None when no source configures any (signatures not required)."""
    state = cache_home() / "trust-state"
    if cli_keys:
        return Trust(tuple(_entries(cli_keys, "--trust")), "--trust", state)
    env = os.environ.get(TRUST_ENV, "").strip()
    if env:
        return Trust(tuple(_entries(env.replace(",", " ").split(), TRUST_ENV)), TRUST_ENV, state)
    path = trust_file()
    if path.is_file():
        # A trust file with every key retired trusts nothing (fail closed), rather than nothing being checked.
        return Trust(tuple(_entries([str(path)], str(path))), str(path), state)
    return None


def _now() -> datetime:
    return datetime.now(UTC)


def check_envelope(envelope: SignedEnvelope, trust: Trust, *, where: str) -> bytes:
    """The payload, once a trusted key's signature over it verifies."""
    known = trust.by_id()
    tried = []
    for signature in envelope.signatures:
        key = known.get(signature.keyid)
        if key is None:
            continue
        if key.verifies(envelope.payload_type, envelope.payload_bytes(), signature.sig):
            return envelope.payload_bytes()
        tried.append(signature.keyid)
    if tried:
        raise BadSignature(
            f"{where}: the signature by trusted key {tried[0]} does not verify: the document was altered",
            hint="do not use this store until its owner republishes the index with the signing key",
        )
    signers = ", ".join(s.keyid for s in envelope.signatures) or "none"
    raise UnknownSigner(
        f"{where}: signed by {signers}, none of which this machine trusts ({trust.source})",
        hint="if the store's owner rotated keys, add their new public key with --trust, FACTORY_TRUST or "
        f"{trust_file()}",
    )


def open_index(store: Store, trust: Trust | None) -> Index:
    """The store's index; with trust configured, only after its signature, expiry and
    version pass. Without trust, a signed index is read without checks."""
    doc = store.get_doc(INDEX)
    return check_index(store.url, doc.data if doc is not None else None, trust)


def check_index(url: str, data: bytes | None, trust: Trust | None) -> Index:
    """open_index for bytes already read (a mirror reads the source's index once and
    copies those same bytes)."""
    where = f"{url}/{INDEX}"
    if data is None:
        if trust is not None and _seen(trust, url) is not None:
            raise MissingSignature(f"{where}: missing, but this machine saw a signed index there", hint=_ROLLBACK_FIX)
        return Index.empty()
    if not is_envelope(data):
        if trust is not None:
            raise MissingSignature(
                f"{where}: not signed, and this machine requires signatures ({trust.source})",
                hint="ask the store's owner to publish with FACTORY_SIGNING_KEY set, or drop the trust setting "
                "for this store",
            )
        return parse(Index, data, where=where)
    envelope = parse(SignedEnvelope, data, where=where)
    if envelope.payload_type != INDEX_PAYLOAD:
        raise BadSignature(f"{where}: signed payload is a {envelope.payload_type}, not an index", hint=_ROLLBACK_FIX)
    if trust is None:
        return parse(Index, envelope.payload_bytes(), where=where)
    index = parse(Index, check_envelope(envelope, trust, where=where), where=where)
    if index.version is None or index.expires is None:
        raise BadSignature(f"{where}: the signed index carries no version or expiry", hint=_ROLLBACK_FIX)
    try:
        expires = datetime.strptime(index.expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise BadSignature(f"{where}: expires {index.expires!r} is not a UTC time", hint=_ROLLBACK_FIX) from None
    if expires <= _now():
        raise ExpiredIndex(
            f"{where}: expired at {index.expires} (version {index.version})",
            hint="a mirror that stopped syncing, or a replay; ask the owner to publish again (each signed write "
            "renews the expiry), or mirror again from the origin",
        )
    _record(trust, url, index.version, where)
    return index


_ROLLBACK_FIX = "the store serves old or damaged metadata; mirror it again from the origin, or ask its owner"


def _state_path(trust: Trust, url: str) -> Path:
    return trust.state_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".json")


def _seen(trust: Trust, url: str) -> int | None:
    try:
        return int(json.loads(_state_path(trust, url).read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _record(trust: Trust, url: str, version: int, where: str) -> None:
    """Refuse a version below the newest seen; raise the record to `version` otherwise."""
    path = _state_path(trust, url)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / (path.name + ".lock")):
        seen = _seen(trust, url)
        if seen is not None and version < seen:
            raise RollbackRefused(
                f"{where}: version {version} is older than version {seen} this machine already saw there",
                hint=_ROLLBACK_FIX + f" (the record is {path}; delete it only if the store was reset on purpose)",
            )
        if seen != version:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"url": url, "version": version}) + "\n")
            os.replace(tmp, path)
