"""Signed metadata as a user meets it, on a folder store and on the Ceph RGW: every
refusal has its own exit code and leaves the output folder empty; rotation works."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from tests.support.bundles import make_bundle
from tests.support.run import factory
from tests.support.stores import StoreUnderTest, make_store

pytestmark = pytest.mark.s3
MODEL, QUANT, TARGET = "rwkv-5-world-tiny", "q4f16_1", "cuda-sm80"


@pytest.fixture(params=["local", "rgw"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    return make_store(request.param, tmp_path)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name in ("old", "new", "stranger"):
        done = factory("keygen", "-o", str(tmp_path / "keys" / f"{name}.key"))
        assert done.returncode == 0, done.stderr
        assert "PRIVATE KEY" not in done.stdout  # never printed
        made[name] = tmp_path / "keys" / f"{name}.key"
    return made


def _env(store: StoreUnderTest, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**store.env, "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
            "FACTORY_TRUST": "", "FACTORY_SIGNING_KEY": "", **extra}  # fmt: skip


def _pull(store: StoreUnderTest, tmp_path: Path, out: Path, *trust: Path, **env: str) -> tuple[int, str]:
    args = ["pull", MODEL, "-q", QUANT, "-t", TARGET, "--store", store.url, "--out", str(out)]
    args += ["--cache", str(tmp_path / "blob-cache")]
    for key in trust:
        args += ["--trust", f"{key}.pub"]
    done = factory(*args, env=_env(store, tmp_path, **env))
    return done.returncode, done.stderr


def _empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def test_each_refusal_has_its_exit_code_and_materializes_nothing(
    store: StoreUnderTest, keys: dict[str, Path], tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "dist")
    signing = _env(store, tmp_path, FACTORY_SIGNING_KEY=str(keys["old"]))
    assert factory("publish", str(bundle), "--store", store.url, env=signing).returncode == 0
    first = store.read("index.json")
    assert json.loads(first)["schema"] == "factory.signed/v1"
    # A second write: version 2, which this machine sees on the good pull.
    yank = factory("yank", MODEL, "-q", QUANT, "-t", TARGET, "--version", "1.0.0", "--store", store.url, env=signing)
    assert yank.returncode == 0, yank.stderr
    assert factory("publish", str(make_bundle(tmp_path / "dist2", version="1.0.1")), "--store", store.url,
                   env=signing).returncode == 0  # fmt: skip
    good = tmp_path / "good"
    assert _pull(store, tmp_path, good, keys["old"]) == (0, "")
    assert factory("verify", store.url, "--trust", f"{keys['old']}.pub", env=_env(store, tmp_path)).returncode == 0
    assert (
        factory("ls", "--store", store.url, "--trust", f"{keys['old']}.pub", env=_env(store, tmp_path)).returncode == 0
    )
    current = store.read("index.json")

    def refused(expected: int, words: str, *trust: Path) -> None:
        out = tmp_path / f"out-{expected}"
        code, stderr = _pull(store, tmp_path, out, *(trust or (keys["old"],)))
        assert code == expected, stderr
        assert words in stderr and "fix:" in stderr and "Traceback" not in stderr
        assert _empty(out)
        if expected != 4:  # ls reads the index only; the manifest check is pull's and verify's
            listed = factory("ls", "--store", store.url, "--trust", f"{(trust or (keys['old'],))[0]}.pub",
                             env=_env(store, tmp_path))  # fmt: skip
            assert listed.returncode == expected, listed.stderr
        verified = factory("verify", store.url, "--trust", f"{(trust or (keys['old'],))[0]}.pub",
                           env=_env(store, tmp_path))  # fmt: skip
        assert verified.returncode == expected, verified.stderr

    # Tampered index: the payload changed under the signature.
    envelope = json.loads(current)
    payload = base64.b64decode(envelope["payload"]).replace(b'"yanked": true', b'"yanked": false')
    store.write("index.json", json.dumps({**envelope, "payload": base64.b64encode(payload).decode()}).encode())
    refused(8, "does not verify")
    # Unsigned index while trust is configured.
    store.write("index.json", payload)
    refused(9, "not signed")
    # Signed by a key nobody trusts (a forged index from a stolen bucket credential).
    store.write("index.json", current)
    refused(10, "none of which this machine trusts", keys["stranger"])
    # Replay of the older (version 1) index.
    store.write("index.json", first)
    refused(12, "older than version")
    # Tampered bundle manifest: the signed index records its sha256.
    store.write("index.json", current)
    key = f"bundles/{MODEL}/{QUANT}/{TARGET}/1.0.1.json"
    manifest = store.read(key)
    store.write(key, manifest.replace(b'"role": "library"', b'"role": "library" '))
    refused(4, "does not match the index")
    store.write(key, manifest)
    # Expired: a signed write whose validity ran out.
    short = _env(store, tmp_path, FACTORY_SIGNING_KEY=str(keys["old"]), FACTORY_INDEX_VALIDITY_DAYS="0.00001")
    assert factory("yank", MODEL, "-q", QUANT, "-t", TARGET, "--version", "1.0.0", "--store", store.url,
                   env=short).returncode == 0  # fmt: skip
    time.sleep(1.2)
    refused(11, "expired at")


def test_a_rotated_key_works_and_a_retired_one_is_refused(
    store: StoreUnderTest, keys: dict[str, Path], tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "dist")
    old, new = keys["old"], keys["new"]
    assert factory("publish", str(bundle), "--store", store.url,
                   env=_env(store, tmp_path, FACTORY_SIGNING_KEY=str(old))).returncode == 0  # fmt: skip
    # Step 1: clients trust both keys (the trust file lists the old and the new one).
    trust_file = tmp_path / "xdg-config" / "factory" / "trusted-keys"
    trust_file.parent.mkdir(parents=True)
    trust_file.write_text(f"{(Path(f'{old}.pub')).read_text()}{Path(f'{new}.pub').read_text()}")
    assert _pull(store, tmp_path, tmp_path / "a")[0] == 0
    # Step 2: the publisher signs with the new key (the private key as PEM text, as a CI secret gives it).
    again = make_bundle(tmp_path / "dist2", version="1.0.1")
    assert factory("publish", str(again), "--store", store.url,
                   env=_env(store, tmp_path, FACTORY_SIGNING_KEY=new.read_text())).returncode == 0  # fmt: skip
    assert _pull(store, tmp_path, tmp_path / "b")[0] == 0
    # Step 3: the old key is retired (its line deleted): an index it signs is refused.
    trust_file.write_text(Path(f"{new}.pub").read_text())
    assert factory("yank", MODEL, "-q", QUANT, "-t", TARGET, "--version", "1.0.1", "--store", store.url,
                   env=_env(store, tmp_path, FACTORY_SIGNING_KEY=str(old))).returncode == 0  # fmt: skip
    code, stderr = _pull(store, tmp_path, tmp_path / "c")
    assert code == 10 and "none of which this machine trusts" in stderr and _empty(tmp_path / "c")
