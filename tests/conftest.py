from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.hub import LocalHub, running_hub

REPO = Path(__file__).resolve().parent.parent
WORLD = REPO / "manifests" / "world.yaml"


@pytest.fixture
def world_data() -> dict[str, Any]:
    """The shipped manifest as plain data, for tests that edit a copy."""
    data = yaml.safe_load(WORLD.read_text())
    assert isinstance(data, dict)
    return copy.deepcopy(data)


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write manifest data as YAML under tmp_path, with paths resolving there."""

    def write(data: dict[str, Any], name: str = "m.yaml") -> Path:
        data = {**data, "root": "."}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """A real HF hub (olah) on loopback, serving git repos the test commits."""
    with running_hub(tmp_path_factory.mktemp("hub")) as hub:
        yield hub
