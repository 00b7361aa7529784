"""The store commands as a user runs them: publish, ls, pull, verify, yank, gc."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.store.backends.base import blob_key
from tests.support.bundles import make_bundle
from tests.support.run import factory
from tests.support.s3servers import S3Server, moto_server

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def moto() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


def test_publish_ls_pull_verify_on_a_local_store(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    bundle = make_bundle(tmp_path / "dist")
    done = factory("publish", str(bundle), "--store", store)
    assert done.returncode == 0, done.stderr
    assert "published 1 bundle(s)" in done.stdout
    listing = factory("ls", "--store", store)
    assert "rwkv-5-world-tiny/q4f16_1/cuda-sm80" in listing.stdout and "latest" in listing.stdout
    pulled = factory(
        "pull", "rwkv-5-world-tiny", "-q", "q4f16_1", "-t", "cuda-sm80", "--store", store,
        "--out", str(tmp_path / "models"), "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    folder = tmp_path / "models" / "rwkv-5-world-tiny-q4f16_1-cuda-sm80"
    assert f"mlc_llm chat {folder} --model-lib {folder}/rwkv-5-world-tiny-q4f16_1-cuda-sm80.so" in pulled.stdout
    assert factory("verify", str(folder)).returncode == 0
    assert factory("verify", store).returncode == 0
    # Tamper with the pulled copy and with the store: both verifications name the damage.
    shard = folder / "params_shard_0.bin"
    shard.unlink()  # break the hard link to the cache before editing
    shard.write_bytes(b"x")
    bad = factory("verify", str(folder))
    assert bad.returncode == 4 and f"{shard}: 1 bytes" in bad.stderr
    manifest = json.loads((bundle / "factory-bundle.json").read_text())
    lib = next(f for f in manifest["files"] if f["role"] == "library")
    (tmp_path / "store" / blob_key(lib["sha256"])).write_bytes(b"tampered")
    bad_store = factory("verify", store)
    assert bad_store.returncode == 4 and lib["path"] in bad_store.stderr


def test_pull_errors_are_clear(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    factory("publish", str(make_bundle(tmp_path / "dist")), "--store", store)
    missing = factory("pull", "nope", "-q", "q4f16_1", "-t", "cuda-sm80", "--store", store, "--out", str(tmp_path))
    assert missing.returncode == 2 and "has no bundle nope/q4f16_1/cuda-sm80" in missing.stderr
    auto = factory("pull", "rwkv-5-world-tiny", "-q", "q4f16_1", "-t", "auto", "--store", store, "--out", str(tmp_path))
    assert auto.returncode == 2 and "available: cuda-sm80" in auto.stderr
    # Run where no manifests/world.yaml is: without one there is no store to fall back to.
    nostore = factory("pull", "x", "-q", "q", "-t", "t", env={"FACTORY_STORE": ""}, cwd=tmp_path)
    assert nostore.returncode == 2 and "no store given" in nostore.stderr


def test_yank_and_gc_from_the_command_line_on_moto(moto: S3Server, tmp_path: Path) -> None:
    bucket = f"cli-{uuid.uuid4().hex[:10]}"
    moto.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    env = {k: v for k, v in moto.env().items() if k != "AWS_ENDPOINT_URL"}
    store = f"s3://{bucket}/factory"
    args = ["--store", store, "--endpoint-url", moto.endpoint]
    for version, seed in (("1.0.0", 1), ("1.1.0", 2)):
        done = factory("publish", str(make_bundle(tmp_path / version, version=version, seed=seed)), *args, env=env)
        assert done.returncode == 0, done.stderr
    yanked = factory(
        "yank", "rwkv-5-world-tiny", "-q", "q4f16_1", "-t", "cuda-sm80", "--version", "1.1.0", "--reason", "NaN",
        *args, env=env,
    )  # fmt: skip
    assert yanked.returncode == 0, yanked.stderr
    assert "latest is now 1.0.0" in yanked.stdout
    listing = factory("ls", *args, env=env)
    assert "yanked" in listing.stdout
    dry = factory("gc", *args, env=env)
    assert dry.returncode == 0 and "would delete (dry run; pass --delete) 0 unreferenced blob(s)" in dry.stdout


def test_a_publisher_killed_with_sigkill_is_finished_by_running_it_again(
    moto: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal
    import subprocess
    import time

    from factory.store.backends import open_store
    from factory.store.index import read_index
    from tests.support.run import FACTORY

    bucket = f"kill-{uuid.uuid4().hex[:10]}"
    moto.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    for key, value in moto.env().items():
        monkeypatch.setenv(key, value)
    env = dict(os.environ)
    store = f"s3://{bucket}/factory"
    bundle = make_bundle(tmp_path / "dist", megabytes=200)
    files = json.loads((bundle / "factory-bundle.json").read_text())["files"]
    proc = subprocess.Popen(
        [str(FACTORY), "publish", str(bundle), "--store", store, "-j", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = moto.client()
    deadline = time.monotonic() + 120
    while True:
        listed = client.list_objects_v2(Bucket=bucket, Prefix="factory/blobs/")  # type: ignore[attr-defined]
        if listed.get("KeyCount", 0) >= 1 or proc.poll() is not None:
            break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the publisher finished before it could be killed"
    s3 = open_store(store, endpoint_url=moto.endpoint)
    assert read_index(s3)[0].bundles == {}
    again = factory("publish", str(bundle), "--store", store, env=moto.env())
    assert again.returncode == 0, again.stderr
    index, _ = read_index(s3)
    assert index.bundles["rwkv-5-world-tiny/q4f16_1/cuda-sm80"].latest == "1.0.0"
    stored = sorted(s3.list_keys("blobs/"))
    assert stored == sorted({blob_key(f["sha256"]) for f in files})


def test_gc_delete_keeps_young_blobs_unless_told_otherwise(tmp_path: Path) -> None:
    import hashlib

    store = f"file://{tmp_path / 'store'}"
    assert factory("publish", str(make_bundle(tmp_path / "dist")), "--store", store).returncode == 0
    orphan = b"a blob whose publish has not written its manifest yet"
    digest = hashlib.sha256(orphan).hexdigest()
    path = tmp_path / "store" / blob_key(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orphan)
    kept = factory("gc", "--store", store, "--delete")
    assert kept.returncode == 0, kept.stderr
    assert "deleted 0 unreferenced blob(s)" in kept.stdout
    assert "kept 1 unreferenced blob(s) younger than 24h" in kept.stdout and path.exists()
    assert factory("gc", "--store", store, "--delete", "--grace", "1h").stdout.count("deleted 0") == 1
    gone = factory("gc", "--store", store, "--delete", "--grace", "0")
    assert gone.returncode == 0 and f"{digest}\ndeleted 1 unreferenced blob(s)" in gone.stdout
    assert not path.exists()
    bad = factory("gc", "--store", store, "--grace", "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr and "Traceback" not in bad.stderr


def test_rerunning_a_release_job_on_a_fresh_runner_publishes_nothing_and_says_so(tmp_path: Path) -> None:
    """The same cell built again elsewhere (other built_at, other library bytes, same build
    key), published with --no-index as release build jobs do: a no-op, said plainly."""
    store = f"file://{tmp_path / 'store'}"
    first = make_bundle(tmp_path / "runner-1")
    assert factory("publish", str(first), "--store", store, "--no-index").returncode == 0
    again = make_bundle(tmp_path / "runner-2")
    (again / "rwkv-5-world-tiny-q4f16_1-cuda-sm80.so").write_bytes(b"other compiler output")
    data = json.loads((again / "factory-bundle.json").read_text())
    library = again / "rwkv-5-world-tiny-q4f16_1-cuda-sm80.so"
    for entry in data["files"]:
        if entry["role"] == "library":
            entry.update(size=library.stat().st_size, sha256=hashlib.sha256(library.read_bytes()).hexdigest())
    data["provenance"]["built_at"] = "2031-01-01T00:00:00Z"
    (again / "factory-bundle.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    done = factory("publish", str(again), "--store", store, "--no-index")
    assert done.returncode == 0, done.stderr
    assert "rwkv-5-world-tiny/q4f16_1/cuda-sm80: this version is already published from the same build key" in (
        done.stdout
    )
    assert "uploaded 0 blob(s)" in done.stdout


def _on_a_terminal(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run factory with stdout and stderr on a pseudo-terminal; its exit code and all it wrote."""
    import os
    import pty
    import subprocess

    from tests.support.run import FACTORY

    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(FACTORY), *args], stdout=follower, stderr=follower, env={**os.environ, **env})
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(), b"".join(chunks).decode(errors="replace")


def test_verify_of_a_store_shows_live_progress_on_a_terminal_only(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    first = make_bundle(tmp_path / "dist", megabytes=2)
    second = make_bundle(tmp_path / "dist", target="cuda-sm90", params_from=first)
    assert factory("publish", str(first), str(second), "--store", store).returncode == 0
    blobs = sum(1 for p in (tmp_path / "store" / "blobs").rglob("*") if p.is_file())
    code, shown = _on_a_terminal("verify", store, env={"TERM": "xterm", "COLUMNS": "250"})
    assert code == 0, shown
    assert f"{blobs} blob(s) verified" in shown
    # The live line: label, bytes, item n/N and which bundle's file.
    assert "verify" in shown and f"{blobs}/{blobs}" in shown and "MB" in shown
    assert "rwkv-5-world-tiny/q4f16_1/cuda-sm" in shown
    piped = factory("verify", store)
    assert piped.returncode == 0 and piped.stderr == ""
    assert piped.stdout.strip() == f"{store}: 2 bundle version(s), {blobs} blob(s) verified"
