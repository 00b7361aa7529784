"""Damaged store documents and bundle manifests, as a user meets them on the command line:
one clear error naming the file, the field and the fix, a non-zero exit code, no traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from factory.store.backends.base import blob_key
from tests.support.bundles import make_bundle
from tests.support.run import factory

NAME = "rwkv-5-world-tiny/q4f16_1/cuda-sm80"


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path]:
    bundle = make_bundle(tmp_path / "dist", megabytes=0.1)
    done = factory("publish", str(bundle), "--store", str(tmp_path / "store"))
    assert done.returncode == 0, done.stderr
    return tmp_path / "store", bundle


def _clear(done: Any, code: int, *needles: str) -> None:
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: ")
    assert "\n  fix: " in done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def _edit_index(store: Path, change: Any) -> None:
    index = json.loads((store / "index.json").read_text())
    change(index)
    (store / "index.json").write_text(json.dumps(index))


def test_ls_and_pull_on_an_index_that_is_not_json(published: tuple[Path, Path], tmp_path: Path) -> None:
    store, _ = published
    (store / "index.json").write_text('{"schema": "factory.index/v1", "bundles": {')
    for args in (["ls"], ["pull", "rwkv-5-world-tiny", "-q", "q4f16_1", "-t", "cuda-sm80", "--out", str(tmp_path)]):
        done = factory(*args, "--store", str(store))
        _clear(done, 4, f"{store}/index.json: not valid JSON", "rerun `factory publish`")


def test_ls_on_a_record_without_compatibility_names_the_field(published: tuple[Path, Path]) -> None:
    store, _ = published
    _edit_index(store, lambda index: index["bundles"][NAME]["versions"]["1.0.0"].pop("compatibility"))
    done = factory("ls", "--store", str(store))
    _clear(done, 4, f"{store}/index.json: bundles['{NAME}'].versions['1.0.0'].compatibility: missing (required)")


def test_an_index_from_a_newer_factory_asks_for_an_upgrade(published: tuple[Path, Path]) -> None:
    store, _ = published
    _edit_index(store, lambda index: index.update(schema="factory.index/v2"))
    done = factory("ls", "--store", str(store))
    _clear(done, 4, "schema 'factory.index/v2' is not one this factory reads", "upgrade the factory")


def test_verify_on_a_bad_bundle_manifest_names_the_file_and_each_field(published: tuple[Path, Path]) -> None:
    _, bundle = published
    manifest_path = bundle / "factory-bundle.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][0]["size"] = "big"
    manifest["files"][1]["sha256"] = "abc"
    del manifest["compatibility"]
    manifest_path.write_text(json.dumps(manifest))
    done = factory("verify", str(bundle))
    _clear(
        done, 4, "error: 3 problems", f"{manifest_path}: files[0].size", f"{manifest_path}: files[1].sha256: 'abc'",
        f"{manifest_path}: compatibility: missing (required)", f"fix: pull or rebuild {bundle}",
    )  # fmt: skip
    manifest_path.write_text("not json")
    _clear(factory("verify", str(bundle)), 4, f"{manifest_path}: not valid JSON")
    manifest_path.unlink()
    _clear(factory("verify", str(bundle)), 2, f"{bundle} is not a bundle folder (no factory-bundle.json)")


def test_publish_of_a_bad_bundle_manifest_uploads_nothing(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "dist", megabytes=0.1)
    manifest_path = bundle / "factory-bundle.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["name"] = "other/q4f16_1/cuda-sm80"
    manifest_path.write_text(json.dumps(manifest))
    done = factory("publish", str(bundle), "--store", str(tmp_path / "store"))
    _clear(done, 4, f"{manifest_path}: name 'other/q4f16_1/cuda-sm80' is not model/quant/target")
    assert not (tmp_path / "store").exists()


def test_gc_on_a_damaged_bundle_manifest_deletes_nothing(published: tuple[Path, Path]) -> None:
    store, bundle = published
    key = store / "bundles" / NAME / "1.0.0.json"
    key.chmod(0o644)
    key.write_text("{}")
    done = factory("gc", "--store", str(store), "--delete", "--grace", "0")
    _clear(done, 4, f"{key}: schema: missing, expected 'factory.bundle/v1'", "delete it from the store and publish")
    files = json.loads((bundle / "factory-bundle.json").read_text())["files"]
    assert all((store / blob_key(f["sha256"])).exists() for f in files)


def test_reading_commands_refuse_a_folder_store_that_does_not_exist(tmp_path: Path) -> None:
    """A mistyped --store is an error, not an empty store; only publish makes a store."""
    missing = tmp_path / "no-such-store"
    pull = ["pull", "rwkv-5-world-tiny", "-q", "q4f16_1", "-t", "cuda-sm80", "--out", str(tmp_path)]
    for args in (["ls"], pull, ["verify"], ["gc"], ["yank", "m", "-q", "q", "-t", "t", "--version", "1"]):
        done = factory(*args, "--store", str(missing))
        _clear(done, 2, f"no store at {missing}", "first `factory publish`")
    mirrored = factory("mirror", str(missing), str(tmp_path / "copy"))
    _clear(mirrored, 2, f"no store at {missing}")
    assert not missing.exists() and not (tmp_path / "copy").exists(), "a reading command made a folder"
    bundle = make_bundle(tmp_path / "dist", megabytes=0.1)
    assert factory("publish", str(bundle), "--store", str(missing)).returncode == 0
    listed = factory("ls", "--store", str(missing))
    assert listed.returncode == 0 and NAME in listed.stdout
