"""`factory mirror` between a folder store and the Ceph RGW, both ways, each killed
(SIGKILL, a real process) in the middle and rerun: the destination verifies with the
origin's key, pulls from it verify, and its signed index is the origin's, byte for byte."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.bundles import make_bundle
from tests.support.run import FACTORY, REPO, factory
from tests.support.stores import StoreUnderTest, make_store

pytestmark = pytest.mark.s3
MODEL, QUANT = "rwkv-5-world-tiny", "q4f16_1"


def _env(tmp_path: Path, *stores: StoreUnderTest, **extra: str) -> dict[str, str]:
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
           "FACTORY_TRUST": "", "FACTORY_SIGNING_KEY": "", **extra}  # fmt: skip
    for store in stores:
        env.update(store.env)
    return env


def _blob_count(store: StoreUnderTest) -> int:
    if store.root is not None:
        return sum(1 for p in (store.root / "blobs").rglob("*") if p.is_file() and not p.name.startswith("."))
    listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=f"{store.prefix}/blobs/")
    return int(listed.get("KeyCount", 0))


def _has_index(store: StoreUnderTest) -> bool:
    try:
        store.read("index.json")
    except Exception:
        return False
    return True


def _kill_midway(args: list[str], env: dict[str, str], started: Callable[[], bool]) -> bool:
    """Run a real `factory` process and SIGKILL it once `started()` holds; False when it
    finished first."""
    proc = subprocess.Popen([str(FACTORY), *args], env={**os.environ, **env}, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    while not started() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


@pytest.fixture
def origin(tmp_path: Path) -> tuple[StoreUnderTest, Path]:
    """A signed folder store with three bundles (two share their params) and a yanked version."""
    key = tmp_path / "keys" / "origin.key"
    assert factory("keygen", "-o", str(key)).returncode == 0
    store = make_store("local", tmp_path)
    first = make_bundle(tmp_path / "dist", target="cuda-sm80", megabytes=24)
    second = make_bundle(tmp_path / "dist", target="cuda-sm90", params_from=first)
    third = make_bundle(tmp_path / "dist", quant="q4f32_1", target="cuda-sm80", seed=3, megabytes=8)
    signing = _env(tmp_path, FACTORY_SIGNING_KEY=str(key))
    done = factory("publish", str(first), str(second), str(third), "--store", store.url, env=signing)
    assert done.returncode == 0, done.stderr
    yank = factory("yank", MODEL, "-q", "q4f32_1", "-t", "cuda-sm80", "--version", "1.0.0", "--reason", "test",
                   "--store", store.url, env=signing)  # fmt: skip
    assert yank.returncode == 0, yank.stderr
    return store, key


def _mirror_with_a_kill(src: StoreUnderTest, dst: StoreUnderTest, tmp_path: Path) -> list[str]:
    env = _env(tmp_path, src, dst)
    args = ["mirror", src.url, dst.url, "-j", "1"]
    killed = _kill_midway(args, env, lambda: (dst.root is None or dst.root.exists()) and _blob_count(dst) > 0)
    assert killed, "the mirror finished before it could be killed"
    copied_before_rerun = _blob_count(dst)
    assert 0 < copied_before_rerun < 30
    assert not _has_index(dst)  # the index is the last thing written
    outputs = []
    for _ in range(2):  # the rerun resumes; a third run has nothing left to do
        done = factory(*args, env=env)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "copied 0 blob(s)" in outputs[1] and "index: unchanged" in outputs[1]
    # Resumed, not copied again. A store may still finish a request the killed process had
    # fully sent, so the rerun can find more blobs than were counted after the kill.
    found = re.search(r"; (\d+) already there", outputs[0])
    assert found is not None and int(found.group(1)) >= copied_before_rerun, outputs[0]
    return outputs


def _check_destination(dst: StoreUnderTest, src: StoreUnderTest, key: Path, tmp_path: Path, name: str) -> None:
    env = _env(tmp_path, dst)
    trust = ["--trust", f"{key}.pub"]
    verified = factory("verify", dst.url, *trust, env=env)
    assert verified.returncode == 0, verified.stderr
    assert "3 bundle version(s)" in verified.stdout
    assert dst.read("index.json") == src.read("index.json")  # signatures travel verbatim
    out = tmp_path / f"pulled-{name}"
    pulled = factory("pull", MODEL, "-q", QUANT, "-t", "cuda-sm90", "--store", dst.url, "--out", str(out),
                     "--cache", str(tmp_path / f"cache-{name}"), *trust, env=env)  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert factory("verify", str(out / f"{MODEL}-{QUANT}-cuda-sm90")).returncode == 0


def test_mirror_local_to_rgw_and_back_survives_a_kill_and_verifies_with_the_origin_key(
    origin: tuple[StoreUnderTest, Path], tmp_path: Path
) -> None:
    src, key = origin
    rgw = make_store("rgw", tmp_path)
    started = time.monotonic()
    _mirror_with_a_kill(src, rgw, tmp_path)
    print(f"local -> rgw with a kill and two reruns: {time.monotonic() - started:.1f}s")
    _check_destination(rgw, src, key, tmp_path, "rgw")
    back = make_store("local", tmp_path)
    _mirror_with_a_kill(rgw, back, tmp_path)
    _check_destination(back, src, key, tmp_path, "back")
    # A mirror cannot forge: a destination that lists its own bundles keeps them and refuses the copy.
    assert json.loads(back.read("index.json"))["schema"] == "factory.signed/v1"


def test_clients_pulling_from_the_destination_during_a_mirror_always_get_a_whole_bundle(
    origin: tuple[StoreUnderTest, Path], tmp_path: Path
) -> None:
    src, key = origin
    dst = make_store("local", tmp_path)
    assert factory("mirror", src.url, dst.url, env=_env(tmp_path)).returncode == 0
    # The origin publishes a new version of the bundle clients pull; mirror it while they pull.
    newer = make_bundle(tmp_path / "dist-new", target="cuda-sm90", version="1.1.0", seed=7, megabytes=16)
    signing = _env(tmp_path, FACTORY_SIGNING_KEY=str(key))
    assert factory("publish", str(newer), "--store", src.url, env=signing).returncode == 0
    env = {**os.environ, **_env(tmp_path)}
    mirror = subprocess.Popen([str(FACTORY), "mirror", src.url, dst.url, "-j", "1"], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    versions = set()
    rounds = 0
    while mirror.poll() is None or rounds < 2:
        out = tmp_path / f"client-{rounds}"
        args = ["pull", MODEL, "-q", QUANT, "-t", "cuda-sm90", "--store", dst.url, "--out", str(out)]
        args += ["--cache", str(tmp_path / "client-cache"), "--trust", f"{key}.pub"]
        pulled = factory(*args, env=_env(tmp_path))
        assert pulled.returncode == 0, pulled.stderr
        versions.add(pulled.stdout.split()[2])
        assert factory("verify", str(out / f"{MODEL}-{QUANT}-cuda-sm90")).returncode == 0
        rounds += 1
    assert mirror.wait() == 0, mirror.communicate()[1]
    assert "1.1.0" in versions  # the last pull, after the mirror, got the new version


def test_export_to_a_single_file_and_import_it_elsewhere(origin: tuple[StoreUnderTest, Path], tmp_path: Path) -> None:
    src, key = origin
    archive = tmp_path / "usb" / "models.tar"
    archive.parent.mkdir()
    exported = factory("mirror", src.url, str(archive), env=_env(tmp_path))
    assert exported.returncode == 0, exported.stderr
    assert archive.is_file() and not archive.with_name("models.tar.partial").exists()
    imported_store = make_store("local", tmp_path)
    imported = factory("mirror", str(archive), imported_store.url, env=_env(tmp_path))
    assert imported.returncode == 0, imported.stderr
    _check_destination(imported_store, src, key, tmp_path, "tar")


def test_only_copies_the_selected_bundles_of_an_unsigned_store(tmp_path: Path) -> None:
    src = make_store("local", tmp_path)
    bundles = [make_bundle(tmp_path / "dist", target=t, seed=i) for i, t in enumerate(("cuda-sm80", "cuda-sm90"))]
    assert factory("publish", *map(str, bundles), "--store", src.url, env=_env(tmp_path)).returncode == 0
    dst = make_store("local", tmp_path)
    done = factory("mirror", src.url, dst.url, "--only", "*/cuda-sm90", env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "mirrored 1 bundle version(s)" in done.stdout and "index: merged" in done.stdout
    listed = json.loads(dst.read("index.json"))["bundles"]
    assert list(listed) == [f"{MODEL}/{QUANT}/cuda-sm90"]
    assert (
        listed[f"{MODEL}/{QUANT}/cuda-sm90"]
        == json.loads(src.read("index.json"))["bundles"][f"{MODEL}/{QUANT}/cuda-sm90"]
    )
    assert factory("verify", dst.url, env=_env(tmp_path)).returncode == 0
    nothing = factory("mirror", src.url, dst.url, "--only", "nope/*", env=_env(tmp_path))
    assert nothing.returncode == 2 and "matches no bundle" in nothing.stderr
