"""Several real `factory pull` processes at once, sharing one blob cache: two targets
of one model share their params blobs, some pulls share an output folder. Against a
local store and a moto S3 server (in this process; the pulls reach it over loopback)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bundles import make_bundle
from tests.support.run import FACTORY, REPO, factory
from tests.support.s3servers import S3Server, moto_server

pytestmark = pytest.mark.s3
MODEL, QUANT = "rwkv-5-world-tiny", "q4f16_1"


def _unique_bytes(*bundles: Path) -> int:
    sizes: dict[str, int] = {}
    for bundle in bundles:
        for entry in json.loads((bundle / "factory-bundle.json").read_text())["files"]:
            sizes[entry["sha256"]] = int(entry["size"])
    return sum(sizes.values())


def _downloaded(stdout: str) -> int:
    found = re.search(r"\((\d+) bytes downloaded\)", stdout)
    assert found, stdout
    return int(found.group(1))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two targets of one model: the params blobs are shared."""
    root = tmp_path_factory.mktemp("bundles")
    first = make_bundle(root / "dist", target="cuda-sm80", megabytes=32)
    second = make_bundle(root / "dist", target="cuda-sm90", params_from=first)
    return first, second


@pytest.fixture(scope="module")
def moto() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


@pytest.fixture(scope="module", params=["local", "moto"])
def published(
    request: pytest.FixtureRequest, bundles: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, str]]:
    """The two bundles in a store; the environment its clients need."""
    if request.param == "local":
        store, env = f"file://{tmp_path_factory.mktemp('store')}", {}
    else:
        server: S3Server = request.getfixturevalue("moto")
        bucket = f"pulls-{uuid.uuid4().hex[:10]}"
        server.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        store, env = f"s3://{bucket}/factory", server.env()
    done = factory("publish", *map(str, bundles), "--store", store, env=env)
    assert done.returncode == 0, done.stderr
    return store, env


@pytest.mark.parametrize("round_", [1, 2])
def test_concurrent_pulls_sharing_a_cache_all_succeed_and_fetch_each_blob_once(
    published: tuple[str, dict[str, str]], bundles: tuple[Path, Path], tmp_path: Path, round_: int
) -> None:
    store, store_env = published
    first, second = bundles
    cache = tmp_path / "cache"
    shared = tmp_path / "shared"
    pulls = [
        ("cuda-sm80", shared),  # two pulls of one bundle into one folder
        ("cuda-sm80", shared),
        ("cuda-sm90", shared),  # another bundle into the same folder
        ("cuda-sm80", tmp_path / "own-a"),
        ("cuda-sm90", tmp_path / "own-b"),
        ("cuda-sm90", tmp_path / "own-c"),
    ]
    env = {**os.environ, **store_env, "FACTORY_CACHE": str(cache)}
    procs = [
        subprocess.Popen(
            [str(FACTORY), "pull", MODEL, "-q", QUANT, "-t", target, "--store", store, "--out", str(out), "-j", "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for target, out in pulls
    ]
    results = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr
    # A blob one process finished is taken from the cache by the others, never fetched twice.
    fetched = sum(_downloaded(out) for out, _ in results)
    assert fetched == _unique_bytes(first, second)
    for target, out in pulls:
        folder = out / f"{MODEL}-{QUANT}-{target}"
        checked = factory("verify", str(folder))
        assert checked.returncode == 0, checked.stderr
    assert sorted(p.name for p in shared.iterdir() if not p.name.startswith(".")) == [
        f"{MODEL}-{QUANT}-cuda-sm80",
        f"{MODEL}-{QUANT}-cuda-sm90",
    ]
    assert [p.name for p in shared.iterdir() if p.name.startswith(".") and p.is_dir()] == []
    assert list((cache / "partial").glob("*.part")) == []


def test_a_pull_killed_mid_download_leaves_no_lock_behind_and_the_rerun_resumes(
    published: tuple[str, dict[str, str]], bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    """flock locks die with their process: a SIGKILLed pull blocks nobody, and its
    partial blobs are resumed rather than fetched again."""
    import signal
    import time

    store, store_env = published
    cache = tmp_path / "cache"
    env = {**os.environ, **store_env, "FACTORY_CACHE": str(cache)}
    args = [str(FACTORY), "pull", MODEL, "-q", QUANT, "-t", "cuda-sm80", "--store", store, "--out", str(tmp_path)]
    proc = subprocess.Popen([*args, "-j", "1"], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size for p in (cache / "partial").glob("*.part")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("the pull finished before it could be killed")
    kept = sum(p.stat().st_size for p in (cache / "partial").glob("*.part"))
    kept += sum(p.stat().st_size for p in (cache / "blobs").rglob("*") if p.is_file())
    assert kept > 0
    again = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert _downloaded(again.stdout) == _unique_bytes(bundles[0]) - kept
    assert factory("verify", str(tmp_path / f"{MODEL}-{QUANT}-cuda-sm80")).returncode == 0
