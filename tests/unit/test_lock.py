from __future__ import annotations

import json
from pathlib import Path

import pytest

from factory.errors import InputError, NetworkError
from factory.manifest.load import load_manifest
from factory.manifest.lock import Lock, floating_refs, missing_entries, read_lock, resolve_lock, write_lock
from tests.conftest import WORLD


class TableResolver:
    """Answers from a table, like a hub and a registry that know these references."""

    def __init__(self, commits: dict[str, str], digests: dict[str, str]) -> None:
        self.commits = commits
        self.digests = digests
        self.asked: list[str] = []

    def hf_commit(self, repo: str, revision: str) -> str:
        self.asked.append(f"{repo}@{revision}")
        try:
            return self.commits[repo]
        except KeyError:
            raise NetworkError(f"model repo {repo} not found") from None

    def image_digest(self, image: str) -> str:
        self.asked.append(image)
        try:
            return self.digests[image]
        except KeyError:
            raise NetworkError("registry unreachable") from None


def full_resolver() -> TableResolver:
    manifest = load_manifest(WORLD).manifest
    return TableResolver(
        {m.hf.repo: f"{i + 1:040x}" for i, m in enumerate(manifest.models) if m.hf},
        {t.base_image: "sha256:" + f"{i}" * 64 for i, t in enumerate(manifest.toolchains.values())},
    )


def test_floating_refs_of_the_world_manifest() -> None:
    refs = floating_refs(load_manifest(WORLD).manifest)
    assert len(refs.hf) == 9
    assert refs.images == ("nvidia/cuda:12.1.1-devel-ubuntu22.04", "nvidia/cuda:12.8.0-devel-ubuntu22.04")


def test_resolve_write_read_roundtrip(tmp_path: Path) -> None:
    manifest = load_manifest(WORLD).manifest
    resolver = full_resolver()
    update = resolve_lock(manifest, Lock(), resolver, upgrade=False)
    assert len(update.resolved) == 11 and not update.kept
    path = tmp_path / "world.lock"
    write_lock(path, update.lock)
    again = read_lock(path)
    assert again == update.lock
    assert missing_entries(manifest, again) == []
    assert json.loads(path.read_text())["lock_version"] == 1
    # A second run keeps what the lock has and asks nothing.
    resolver.asked.clear()
    second = resolve_lock(manifest, again, resolver, upgrade=False)
    assert resolver.asked == [] and len(second.kept) == 11
    # --upgrade asks again.
    third = resolve_lock(manifest, again, resolver, upgrade=True)
    assert len(resolver.asked) == 11 and len(third.resolved) == 11


def test_an_unreachable_reference_fails_and_names_it() -> None:
    manifest = load_manifest(WORLD).manifest
    resolver = full_resolver()
    del resolver.digests["nvidia/cuda:12.8.0-devel-ubuntu22.04"]
    with pytest.raises(NetworkError, match=r"image nvidia/cuda:12\.8\.0-devel-ubuntu22\.04: registry unreachable"):
        resolve_lock(manifest, Lock(), resolver, upgrade=False)


def test_exact_references_need_no_lock_entry() -> None:
    lock = Lock()
    assert lock.hf_commit("RWKV/x", "a" * 40) == "a" * 40
    assert lock.image_digest("debian@sha256:" + "d" * 64) == "sha256:" + "d" * 64
    assert lock.hf_commit("RWKV/x", "main") is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"lock_version": 1, "hf": {"RWKV/x@main": "nope"}}', "hf.RWKV/x@main"),
        ('{"lock_version": 2}', "lock_version"),
        ('{"lock_version": 1, "extra": 1}', "extra"),
        ("not json", ""),
    ],
)
def test_malformed_lock_is_an_input_error(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "m.lock"
    path.write_text(body)
    with pytest.raises(InputError) as info:
        read_lock(path)
    assert info.value.exit_code == 2
    if field:
        assert info.value.problems[0].field == field
    assert "factory lock" in info.value.problems[0].fix


def test_write_lock_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    write_lock(path, Lock(hf={"a/b@main": "f" * 40}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.lock"]
