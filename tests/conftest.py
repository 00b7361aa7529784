from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.hub import LocalHub, running_hub

REPO = Path(__file__).resolve().parent.parent
WORLD = REPO / "manifests" / "source-built.yaml"


def copy_patches(data: dict[str, Any], root: Path) -> None:
    """Copy the repository's patch files a manifest names into `root`, so a copy of a
    shipped manifest whose root is moved still finds them."""
    for toolchain in data.get("toolchains", {}).values():
        for patch in toolchain.get("patches", []):
            source, dest = REPO / patch["path"], root / patch["path"]
            if source.is_file() and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(source.read_bytes())


@pytest.fixture
def world_data() -> dict[str, Any]:
    """The shipped source-built manifest as plain data, for tests that edit a copy."""
    data = yaml.safe_load(WORLD.read_text())
    assert isinstance(data, dict)
    return copy.deepcopy(data)


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write manifest data as YAML under tmp_path, with paths resolving there."""

    def write(data: dict[str, Any], name: str = "m.yaml") -> Path:
        data = {**data, "root": "."}
        copy_patches(data, tmp_path)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """A real HF hub (olah) on loopback, serving git repos the test commits."""
    with running_hub(tmp_path_factory.mktemp("hub")) as hub:
        yield hub


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A real Docker engine with the tests' base image (see tests/support/docker.py)."""
    from tests.support.docker import engine_or_skip, ensure_base_image

    client = engine_or_skip()
    ensure_base_image(client)
    yield client
    client.close()


@dataclass(frozen=True)
class BuiltToolchain:
    manifest: Path
    ref: str
    first_stdout: str


@pytest.fixture(scope="session")
def conformance_image(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> BuiltToolchain:
    """The conformance toolchain image, built once per session through `factory images build`.

    A per-session salt in its context gives it a fresh content tag, so this
    first build really builds (cached layers keep it quick)."""
    import uuid

    from tests.support.docker import conformance_context, ensure_wheelhouse, toolchain_manifest
    from tests.support.run import factory

    root = tmp_path_factory.mktemp("conformance")
    conformance_context(root / "conformance", salt=uuid.uuid4().hex)
    (root / "patches").mkdir()
    (root / "patches" / "standin.patch").write_text("--- a/standin\n+++ b/standin\n")
    manifest = root / "m.yaml"
    manifest.write_text(yaml.safe_dump(toolchain_manifest(root, patches=("patches/standin.patch",))))
    done = factory("images", "build", "-m", str(manifest), "--wheelhouse", str(ensure_wheelhouse()), "--offline")
    assert done.returncode == 0, done.stderr
    name, ref, verb = done.stdout.strip().split("\t")[:3]
    assert (name, verb) == ("conformance", "built"), done.stdout
    return BuiltToolchain(manifest=manifest, ref=ref, first_stdout=done.stdout)
