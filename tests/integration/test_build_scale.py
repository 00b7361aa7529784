"""The scale check: a second `factory build` of a fully built matrix of 100 cells
starts no container (every node is found in the build cache)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.hub import LocalHub
from tests.support.scale import StepContainers, scale_project

pytestmark = [pytest.mark.docker, pytest.mark.hub]


def test_a_second_build_of_a_built_100_cell_matrix_starts_no_container(
    local_hub: LocalHub, docker_client: Any, tmp_path: Any
) -> None:
    project = scale_project(tmp_path, local_hub, cells=100)
    assert project.cells >= 100
    build = ("build", "-m", str(project.manifest), "--work", "work", "--out", "dist", "-j", "4")
    with StepContainers(docker_client) as first_steps:
        first = project.run(*build)
    assert first.returncode == 0, first.stderr + first.stdout
    # One convert per quantization, one compile per cell: the matrix really was built here.
    assert len([s for s in first_steps.steps if s.startswith("compile:")]) == project.cells
    assert len([s for s in first_steps.steps if s.startswith("convert:")]) == 2
    assert len(list((tmp_path / "dist").iterdir())) == project.cells

    with StepContainers(docker_client) as second_steps:
        again = project.run(*build)
    assert again.returncode == 0, again.stderr + again.stdout
    assert second_steps.steps == []
    assert f"built 0, cached {project.cells}," in again.stdout
