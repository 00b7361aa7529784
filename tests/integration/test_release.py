"""`factory release` on a local store: the workflow's final job, run by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from factory.store.backends import open_store
from factory.store.index import read_index
from tests.support.bundles import make_bundle
from tests.support.docker import toolchain_manifest
from tests.support.run import factory


def _manifest(tmp_path: Path, targets: dict[str, Any]) -> Path:
    data = toolchain_manifest(tmp_path)
    data["targets"] = targets
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


SM80: dict[str, Any] = {"device": {"kind": "cuda", "arch": "sm_80"}, "runner": "container", "os": "linux"}
SM90: dict[str, Any] = {"device": {"kind": "cuda", "arch": "sm_90"}, "runner": "container", "os": "linux"}


def test_release_writes_the_manifest_the_index_and_notes(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    manifest = _manifest(tmp_path, {"cuda-sm80": SM80, "cuda-sm90": SM90})
    for target in ("cuda-sm80", "cuda-sm90"):
        bundle = make_bundle(tmp_path / "dist", model="rwkv-world-tiny", target=target, version="0.0.1")
        done = factory("publish", str(bundle), "--store", store, "--no-index")
        assert done.returncode == 0, done.stderr
    assert read_index(open_store(store))[0].bundles == {}, "build jobs leave the index to the release"

    notes, out = tmp_path / "notes.md", tmp_path / "release" / "release.json"
    done = factory("release", "-m", str(manifest), "--store", store, "--notes", str(notes), "--output-file", str(out))
    assert done.returncode == 0, done.stderr
    index, _ = read_index(open_store(store))
    assert set(index.bundles) == {"rwkv-world-tiny/q4f16_1/cuda-sm80", "rwkv-world-tiny/q4f16_1/cuda-sm90"}
    assert index.releases["test"].latest == "0.0.1"
    release = json.loads(out.read_text())
    assert release["schema"] == "factory.release/v1" and len(release["bundles"]) == 2
    assert json.loads((tmp_path / "store" / "releases" / "test" / "0.0.1.json").read_text()) == release
    text = notes.read_text()
    assert "| `rwkv-world-tiny/q4f16_1/cuda-sm80` | current |" in text
    row = next(line for line in text.splitlines() if "cuda-sm90" in line)
    sha = next(b["sha256"] for b in release["bundles"] if b["name"].endswith("cuda-sm90"))
    assert f"`{sha[:16]}`" in row
    assert text in done.stdout
    # Running the final job again (a retried workflow) changes nothing.
    again = factory("release", "-m", str(manifest), "--store", store)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "store" / "releases" / "test" / "0.0.1.json").read_text()) == release


def test_release_refuses_when_a_cell_has_no_bundle(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    manifest = _manifest(tmp_path, {"cuda-sm80": SM80, "cuda-sm90": SM90})
    bundle = make_bundle(tmp_path / "dist", model="rwkv-world-tiny", target="cuda-sm80", version="0.0.1")
    factory("publish", str(bundle), "--store", store, "--no-index")
    done = factory("release", "-m", str(manifest), "--store", store)
    assert done.returncode == 1
    assert "1 cell(s) of release test 0.0.1 have no bundle" in done.stderr
    assert "rwkv-world-tiny/q4f16_1/cuda-sm90" in done.stderr
    assert not (tmp_path / "store" / "releases").exists()
    assert (tmp_path / "store" / "index.json").exists() is False


def test_a_signed_release_verifies_and_mirrors_by_release_name(tmp_path: Path) -> None:
    """The workflow's release with FACTORY_SIGNING_KEY: the index and the release manifest
    are signed, `verify --trust` checks both, and `mirror --release` copies that release."""
    store = f"file://{tmp_path / 'store'}"
    key = tmp_path / "release.key"
    assert factory("keygen", "-o", str(key)).returncode == 0
    env = {"FACTORY_SIGNING_KEY": str(key), "XDG_CACHE_HOME": str(tmp_path / "cache"), "FACTORY_TRUST": ""}
    manifest = _manifest(tmp_path, {"cuda-sm80": SM80})
    bundle = make_bundle(tmp_path / "dist", model="rwkv-world-tiny", target="cuda-sm80", version="0.0.1")
    assert factory("publish", str(bundle), "--store", store, "--no-index", env=env).returncode == 0
    out = tmp_path / "release" / "release.json"
    done = factory("release", "-m", str(manifest), "--store", store, "--output-file", str(out), env=env)
    assert done.returncode == 0, done.stderr
    signed = json.loads((tmp_path / "release" / "release.signed.json").read_text())
    assert signed["payloadType"] == "application/vnd.factory.release+json"
    assert (tmp_path / "store" / "releases" / "test" / "0.0.1.signed.json").is_file()
    trust = ["--trust", f"{key}.pub"]
    assert factory("verify", store, *trust, env={**env, "FACTORY_SIGNING_KEY": ""}).returncode == 0
    # A release signature over other bytes is refused (exit 8).
    sig_path = tmp_path / "store" / "releases" / "test" / "0.0.1.signed.json"
    good = sig_path.read_bytes()
    forged = json.loads(good)
    forged["payload"] = json.loads(good)["payload"][:-8] + "AAAAAAA="
    sig_path.write_text(json.dumps(forged))
    bad = factory("verify", store, *trust, env={**env, "FACTORY_SIGNING_KEY": ""})
    assert bad.returncode == 8, bad.stderr
    sig_path.write_bytes(good)
    copy = f"file://{tmp_path / 'copy'}"
    mirrored = factory("mirror", store, copy, "--release", "test@0.0.1", env={**env, "FACTORY_SIGNING_KEY": ""})
    assert mirrored.returncode == 0, mirrored.stderr
    assert (tmp_path / "copy" / "releases" / "test" / "0.0.1.signed.json").read_bytes() == good
    assert factory("verify", copy, *trust, env={**env, "FACTORY_SIGNING_KEY": ""}).returncode == 0
