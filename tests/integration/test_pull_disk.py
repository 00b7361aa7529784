"""A pull that does not fit on the disk: refused before the first byte when the
manifest's sizes say so, and stopped cleanly (partial blobs kept) when a write fails."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from factory.errors import LocalDiskError
from factory.store import blob_cache
from factory.store.backends import open_store
from factory.store.publish import publish
from factory.store.pull import pull
from tests.support.bundles import make_bundle
from tests.support.run import factory

MODEL, QUANT, TARGET = "rwkv-5-world-tiny", "q4f16_1", "cuda-sm80"


def _published(tmp_path: Path, megabytes: float) -> tuple[str, int]:
    store = f"file://{tmp_path / 'store'}"
    bundle = make_bundle(tmp_path / "dist", megabytes=megabytes)
    publish(open_store(store), [bundle])
    files = json.loads((bundle / "factory-bundle.json").read_text())["files"]
    return store, sum({f["sha256"]: int(f["size"]) for f in files}.values())


def _cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0


def test_too_little_free_space_is_refused_before_the_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, total = _published(tmp_path, megabytes=3)
    # The one seam: what the system says is free.
    monkeypatch.setattr(blob_cache, "free_space", lambda path: total - 1)
    with pytest.raises(LocalDiskError) as caught:
        pull(open_store(store), MODEL, QUANT, TARGET, version=None, out=tmp_path / "out", cache=tmp_path / "cache")
    assert caught.value.exit_code == 7
    assert (
        "not enough free space" in caught.value.message
        and f"{(total - 1) / 1e6:.1f} MB is free" in caught.value.message
    )
    assert caught.value.hint is not None and "--cache" in caught.value.hint
    assert _cache_bytes(tmp_path / "cache") == 0 and not (tmp_path / "out").exists()
    # Enough room: the same pull goes through.
    monkeypatch.setattr(blob_cache, "free_space", lambda path: total)
    pulled = pull(open_store(store), MODEL, QUANT, TARGET, version=None, out=tmp_path / "out", cache=tmp_path / "c2")
    assert pulled.downloaded_bytes == total


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """A real small filesystem (tmpfs; needs root), resizable while mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = False

    def size(megabytes: str) -> Path:
        nonlocal mounted
        options = f"size={megabytes}" if not mounted else f"remount,size={megabytes}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=False)
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounted = True
        return mount

    yield size
    if mounted:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_pull_bigger_than_the_disk_exits_7_before_downloading(
    tmp_path: Path, small_disk: Callable[[str], Path]
) -> None:
    store, total = _published(tmp_path, megabytes=8)
    disk = small_disk("4m")
    done = factory(
        "pull", MODEL, "-q", QUANT, "-t", TARGET, "--store", store, "--out", str(disk / "models"),
        "--cache", str(disk / "cache"),
    )  # fmt: skip
    assert done.returncode == 7, done.stderr
    assert "not enough free space" in done.stderr and "Traceback" not in done.stderr
    assert f"need {total / 1e6:.1f} MB" in done.stderr
    assert _cache_bytes(disk / "cache") == 0


def test_a_disk_that_fills_during_the_pull_stops_every_worker_and_the_rerun_resumes(
    tmp_path: Path, small_disk: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, total = _published(tmp_path, megabytes=10)
    disk = small_disk("5m")
    cache = disk / "cache"
    # Something else takes the room after the check: the check is told there is plenty,
    # the writes meet the real ENOSPC.
    monkeypatch.setattr(blob_cache, "free_space", lambda path: 1 << 40)
    with pytest.raises(LocalDiskError) as caught:
        pull(open_store(store), MODEL, QUANT, TARGET, version=None, out=disk / "models", cache=cache, jobs=8)
    assert "the disk is full" in caught.value.message and "every download was stopped" in caught.value.message
    assert caught.value.hint is not None and "resumes" in caught.value.hint
    kept = _cache_bytes(cache)
    assert kept > 0, "what arrived before the disk filled stays for the next run"
    assert not (disk / "models" / f"{MODEL}-{QUANT}-{TARGET}").exists()
    small_disk("64m")
    pulled = pull(open_store(store), MODEL, QUANT, TARGET, version=None, out=disk / "models", cache=cache, jobs=8)
    assert pulled.downloaded_bytes == total - kept
    checked = factory("verify", str(pulled.path))
    assert checked.returncode == 0, checked.stderr
