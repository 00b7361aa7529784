"""The README's first command block, read from the README and run as it stands in a copy
of the checkout: install, make the example model, lock, build (real compiler, CPU and
Vulkan on lavapipe), gate, publish to a folder store, pull and run. Only the offline
options the README names are set, since GitHub and image registries are not reachable
here; nothing else stands in for anything."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from factory.manifest.weights import content_digest, local_files
from tests.conftest import REPO
from tests.support.docker import BASE_IMAGE
from tests.support.wheel import ensure_wheel_wheelhouse, sources_env

pytestmark = [pytest.mark.mlc, pytest.mark.docker]
README = REPO / "README.md"
BASE = "debian:bookworm-slim"
CELLS = ("cpu-x86_64", "vulkan-x86_64")


def first_block() -> str:
    match = re.search(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert match, "the README has no bash block"
    return match.group(1)


def test_the_first_block_is_the_first_build() -> None:
    """The block this test runs is the one a newcomer meets first, and it builds."""
    block = first_block()
    for command in (
        "pip install -e",
        "factory example-model example/model",
        "factory lock -m manifests/example.yaml",
        "factory build -m manifests/example.yaml --smoke --store example/store",
        "factory pull rwkv-6-world-example",
        "factory run example/pulled/rwkv-6-world-example-q4f32_1-cpu-x86_64",
    ):
        assert command in block, command


def _checkout_copy(dest: Path) -> None:
    """The files a clone of this checkout would hold (tracked, and new files git would add)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(source.read_bytes())
            (dest / name).chmod(source.stat().st_mode & 0o777)


def _base_image(client: Any) -> None:
    """The engine's debian:bookworm-slim, which the registry would give: the tests' local
    Debian base stands in when the engine has none (no registry is reachable here)."""
    from docker.errors import ImageNotFound

    try:
        client.images.get(BASE)
    except ImageNotFound:
        client.images.get(BASE_IMAGE).tag(BASE)


def test_the_readme_first_block_builds_publishes_pulls_and_runs(docker_client: Any, tmp_path: Path) -> None:
    block = first_block()
    sources = sources_env()
    wheelhouse = ensure_wheel_wheelhouse()
    _base_image(docker_client)
    checkout = tmp_path / "factory"
    _checkout_copy(checkout)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FACTORY_", "VIRTUAL_ENV")) and key not in ("PYTHONPATH",)
    }
    env.update(
        sources,
        FACTORY_WHEELHOUSE=str(wheelhouse),
        FACTORY_OFFLINE="1",
        FACTORY_LOCAL_IMAGES="1",
        # The copy's own node cache and blob cache: nothing comes from this checkout's.
        FACTORY_CACHE=str(tmp_path / "blob-cache"),
    )
    since = time.time()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    seconds = time.time() - since
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-8000:]
    print(f"README first block: {seconds:.0f} s")

    # Both cells built and every gate passed, with the exact-fixture parity bound (the
    # example model is made of exact 4-bit groups, so q4f32_1 is float32 rounding only;
    # tests/integration/test_mlc_e2e.py measures it at ~1e-11).
    for target in CELLS:
        line = next(
            (line for line in output.splitlines() if f"built bundle:rwkv-6-world-example/q4f32_1/{target}" in line),
            None,
        )
        assert line is not None, output[-6000:]
        assert "smoke passed" in line and "parity passed" in line, line
        kl = float(re.search(r"parity passed \(KL mean ([0-9.e+-]+)", line).group(1))  # type: ignore[union-attr]
        assert kl <= 1e-8, line
    assert "published 2 bundle(s) to file://example/store" in output

    # The store holds both, its index names them, and the pulled bundle ran.
    index = json.loads((checkout / "example" / "store" / "index.json").read_text())
    assert sorted(index["bundles"]) == [f"rwkv-6-world-example/q4f32_1/{t}" for t in CELLS]
    assert all(entry["latest"] == "0.1.0" for entry in index["bundles"].values())
    run = re.search(r"prefill ([0-9.]+) tok/s, decode ([0-9.]+) tok/s, logits \[65536\] finite=True, passed", output)
    assert run, output[-4000:]
    assert float(run.group(1)) > 0 and float(run.group(2)) > 0

    # Provenance: the bundle names the local model by the content hash of its files.
    pulled = checkout / "example" / "pulled" / "rwkv-6-world-example-q4f32_1-cpu-x86_64"
    bundle = json.loads((pulled / "factory-bundle.json").read_text())
    model = checkout / "example" / "model"
    files = local_files(model, "safetensors")
    assert files is not None
    assert bundle["provenance"]["model"] == {"local": "example/model", "sha256": content_digest(model, files)}
    assert bundle["gates"]["parity"]["status"] == "passed"
