"""`factory lock` against a real hub (olah on loopback), run as the CLI runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.hub import LocalHub

pytestmark = pytest.mark.hub

PINNED_BASE = "debian@sha256:" + "0" * 64


def factory(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "factory", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        env={**os.environ, "HF_HOME": str(cwd / "hf-home"), **env},
    )


@pytest.fixture
def hub_manifest(
    local_hub: LocalHub, world_data: dict[str, Any], write_manifest: Callable[..., Path], tmp_path: Path
) -> tuple[Path, dict[str, str]]:
    """The world manifest with repos on the local hub (unique per test) and digest-pinned base images."""
    commits: dict[str, str] = {}
    for model in world_data["models"]:
        repo = f"{tmp_path.name[:40]}/{model['hf']['repo'].split('/')[1]}"
        model["hf"]["repo"] = repo
        commits[repo] = local_hub.commit(repo, {"config.json": json.dumps({"name": model["name"]}).encode()})
    for toolchain in world_data["toolchains"].values():
        toolchain["base_image"] = PINNED_BASE
    return write_manifest(world_data, "world.yaml"), commits


def test_lock_resolves_revisions_from_the_hub(local_hub: LocalHub, hub_manifest: tuple[Path, dict[str, str]]) -> None:
    manifest, commits = hub_manifest
    result = factory(["lock", "-m", str(manifest)], local_hub.env(), manifest.parent)
    assert result.returncode == 0, result.stderr
    lock = json.loads(manifest.with_suffix(".lock").read_text())
    assert lock["hf"] == {f"{repo}@main": commit for repo, commit in commits.items()}
    assert lock["images"] == {}  # digest-pinned images need no entry

    planned = factory(["plan", "-m", str(manifest), "--locked", "-f", "json"], {}, manifest.parent)
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(planned.stdout)
    assert doc["unresolved"] == [] and all(node["locked"] for node in doc["nodes"])

    # A new upstream commit: the lock keeps its entry until --upgrade.
    repo = next(iter(commits))
    newer = local_hub.commit(repo, {"README.md": b"new\n"})
    kept = factory(["lock", "-m", str(manifest)], local_hub.env(), manifest.parent)
    assert kept.returncode == 0, kept.stderr
    assert json.loads(manifest.with_suffix(".lock").read_text())["hf"][f"{repo}@main"] == commits[repo]
    upgraded = factory(["lock", "-m", str(manifest), "--upgrade"], local_hub.env(), manifest.parent)
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(manifest.with_suffix(".lock").read_text())["hf"][f"{repo}@main"] == newer


def test_unresolvable_references_fail_and_leave_the_lock_alone(
    local_hub: LocalHub, hub_manifest: tuple[Path, dict[str, str]]
) -> None:
    manifest, _ = hub_manifest
    text = manifest.read_text()
    lock_path = manifest.with_suffix(".lock")
    lock_path.write_text('{"lock_version": 1, "hf": {}, "images": {}}\n')
    before = lock_path.read_bytes()

    missing_repo = manifest.with_name("missing.yaml")
    missing_repo.write_text(text.replace("/rwkv-4-world-3b\n", "/does-not-exist\n", 1))
    result = factory(["lock", "-m", str(missing_repo)], local_hub.env(), manifest.parent)
    assert result.returncode == 3, result.stderr
    assert "does-not-exist@main" in result.stderr and "not found" in result.stderr
    assert not missing_repo.with_suffix(".lock").exists()

    # A floating base image with no reachable engine/registry: a clear error, nothing written.
    floating = text.replace(PINNED_BASE, "nvidia/cuda:12.8.0-devel-ubuntu22.04")
    manifest.write_text(floating)
    env = {**local_hub.env(), "DOCKER_HOST": f"unix://{manifest.parent}/no-docker.sock"}
    result = factory(["lock", "-m", str(manifest)], env, manifest.parent)
    assert result.returncode == 3, result.stderr
    assert "image nvidia/cuda:12.8.0-devel-ubuntu22.04" in result.stderr
    assert "Traceback" not in result.stderr
    assert lock_path.read_bytes() == before


def test_hub_unreachable_is_a_network_error(hub_manifest: tuple[Path, dict[str, str]]) -> None:
    manifest, _ = hub_manifest
    result = factory(["lock", "-m", str(manifest)], {"HF_ENDPOINT": "http://127.0.0.1:9"}, manifest.parent)
    assert result.returncode == 3
    assert "hub unreachable" in result.stderr and "fix:" in result.stderr
