"""Keys, signed envelopes and the trust checks, on a folder store in this process."""

from __future__ import annotations

import base64
import calendar
import json
import os
import stat
import time
from pathlib import Path

import pytest

from factory.errors import BadSignature, ExpiredIndex, MissingSignature, RollbackRefused, UnknownSigner, UsageError
from factory.store.backends.local import LocalStore
from factory.store.documents import INDEX, Index, SignedEnvelope, parse
from factory.store.index import update_index
from factory.trust.policy import Trust, load_trust, open_index
from factory.trust.signing import keygen, load_signer, parse_public


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("FACTORY_TRUST", "FACTORY_SIGNING_KEY", "FACTORY_INDEX_VALIDITY_DAYS"):
        monkeypatch.delenv(name, raising=False)


def _trust(*pubs: Path, tmp_path: Path) -> Trust:
    trust = load_trust([str(p) for p in pubs])
    assert trust is not None
    return trust


def test_keygen_writes_a_private_key_only_its_owner_reads_and_a_one_line_public_key(tmp_path: Path) -> None:
    pair = keygen(tmp_path / "k" / "signing.key")
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert pair.public_path.read_text().strip() == pair.public and pair.public.startswith("ed25519:")
    assert parse_public(pair.public, where="test").keyid == pair.keyid == load_signer(str(pair.private_path)).keyid
    # The PEM text works as well as the path (CI secrets), and a second keygen does not overwrite.
    assert load_signer(pair.private_path.read_text()).keyid == pair.keyid
    with pytest.raises(UsageError, match="already exists"):
        keygen(pair.private_path)


def test_bad_keys_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(UsageError, match="not an unencrypted PEM private key"):
        load_signer(str(tmp_path / "bad.key"))
    with pytest.raises(UsageError, match="cannot read the signing key"):
        load_signer(str(tmp_path / "missing.key"))
    with pytest.raises(UsageError, match="not a valid ed25519 public key"):
        parse_public("ed25519:AAAA", where="--trust")


def test_each_refusal_has_its_own_error(tmp_path: Path) -> None:
    a, b = keygen(tmp_path / "a.key"), keygen(tmp_path / "b.key")
    store = LocalStore(tmp_path / "store")
    update_index(store, lambda i: i, signer=load_signer(str(a.private_path)))
    trust_a = _trust(a.public_path, tmp_path=tmp_path)
    assert open_index(store, trust_a).version == 1
    assert open_index(store, _trust(b.public_path, a.public_path, tmp_path=tmp_path)).version == 1  # rotation
    with pytest.raises(UnknownSigner):
        open_index(store, _trust(b.public_path, tmp_path=tmp_path))
    # Tampered payload: same signature, other bytes.
    raw = json.loads((store.root / INDEX).read_bytes())
    payload = json.loads(base64.b64decode(raw["payload"]))
    payload["version"] = 99
    tampered = {**raw, "payload": base64.b64encode(json.dumps(payload).encode()).decode()}
    (store.root / INDEX).write_text(json.dumps(tampered))
    with pytest.raises(BadSignature):
        open_index(store, trust_a)
    # Unsigned, while trust is configured.
    (store.root / INDEX).write_bytes(Index.empty().body())
    with pytest.raises(MissingSignature):
        open_index(store, trust_a)
    assert open_index(store, None).bundles == {}


def test_rollback_and_expiry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = keygen(tmp_path / "a.key")
    signer = load_signer(str(a.private_path))
    store = LocalStore(tmp_path / "store")
    trust = _trust(a.public_path, tmp_path=tmp_path)
    update_index(store, lambda i: i, signer=signer)
    old = (store.root / INDEX).read_bytes()
    update_index(store, lambda i: i, signer=signer)
    assert open_index(store, trust).version == 2
    (store.root / INDEX).write_bytes(old)
    with pytest.raises(RollbackRefused, match="version 1 is older than version 2"):
        open_index(store, trust)
    # Another store's record is its own; a machine that never saw version 2 accepts 1.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-cache"))
    assert open_index(store, _trust(a.public_path, tmp_path=tmp_path)).version == 1
    monkeypatch.setenv("FACTORY_INDEX_VALIDITY_DAYS", "0.000001")
    update_index(store, lambda i: i, signer=signer)
    envelope = parse(SignedEnvelope, (store.root / INDEX).read_bytes(), where="t")
    expires = parse(Index, envelope.payload_bytes(), where="t").expires
    assert expires is not None
    # `expires` has whole seconds (rounded down): wait until that second has passed.
    deadline = calendar.timegm(time.strptime(expires, "%Y-%m-%dT%H:%M:%SZ"))
    time.sleep(max(0.0, deadline - time.time()) + 0.01)
    with pytest.raises(ExpiredIndex, match="expired at"):
        open_index(store, trust)


def test_trust_sources_take_turns_cli_then_environment_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = keygen(tmp_path / "a.key"), keygen(tmp_path / "b.key")
    assert load_trust(None) is None
    file = tmp_path / "config" / "factory" / "trusted-keys"
    file.parent.mkdir(parents=True)
    file.write_text(f"# the release key\n{a.public}\n{b.public}  # the new key\n")
    from_file = load_trust(None)
    assert from_file is not None and {k.keyid for k in from_file.keys} == {a.keyid, b.keyid}
    monkeypatch.setenv("FACTORY_TRUST", b.public)
    from_env = load_trust(None)
    assert from_env is not None and [k.keyid for k in from_env.keys] == [b.keyid]
    from_cli = load_trust([str(a.public_path)])
    assert from_cli is not None and [k.keyid for k in from_cli.keys] == [a.keyid]


def test_a_signed_index_is_never_overwritten_unsigned(tmp_path: Path) -> None:
    a = keygen(tmp_path / "a.key")
    store = LocalStore(tmp_path / "store")
    update_index(store, lambda i: i, signer=load_signer(str(a.private_path)))
    with pytest.raises(UsageError, match="is signed"):
        update_index(store, lambda i: i)
    assert os.environ.get("FACTORY_SIGNING_KEY") is None


def test_a_trust_file_with_every_key_retired_trusts_nothing_and_a_missing_key_file_is_named(tmp_path: Path) -> None:
    file = tmp_path / "config" / "factory" / "trusted-keys"
    file.parent.mkdir(parents=True)
    file.write_text("# ed25519:... retired 2026-11\n")
    trust = load_trust(None)
    assert trust is not None and trust.keys == ()  # fail closed: signatures still required
    with pytest.raises(UsageError, match=r"trusted key file .*nope\.pub not found"):
        load_trust([str(tmp_path / "nope.pub")])


def _see(args: tuple[str, str, int]) -> str:
    """One process recording that it saw `version` of a store (the trust state's writer)."""
    cache, url, version = args
    os.environ["XDG_CACHE_HOME"] = cache
    from factory.trust.policy import _record

    trust = load_trust(["ed25519:" + base64.b64encode(b"\x01" * 32).decode()])
    assert trust is not None
    try:
        _record(trust, url, version, "test")
    except RollbackRefused:
        return "refused"
    return "recorded"


def test_concurrent_processes_only_ever_raise_the_version_seen(tmp_path: Path) -> None:
    import multiprocessing

    cache = str(tmp_path / "cache")
    versions = list(range(1, 41))
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        outcomes = pool.map(_see, [(cache, "s3://b/p", v) for v in reversed(versions)])
    state = next((tmp_path / "cache" / "factory" / "trust-state").glob("*.json"))
    assert json.loads(state.read_text())["version"] == 40
    assert outcomes[0] == "recorded" and "refused" in outcomes  # later, lower versions are rollbacks
    assert not list(state.parent.glob(".*.tmp"))
