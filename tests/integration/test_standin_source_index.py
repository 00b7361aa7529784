"""Issue 11 item 5 against a real read-only mount: the current flow's convert_weight
indexes a lone model.safetensors in its source folder (the stand-in models it from
the recorded contract), which a step's read-only model mount refuses; the index
`factory build` makes at fetch time (fetch.index_single_safetensors) prevents it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from factory.cells.fetch import index_single_safetensors
from factory.runners import Mount, Step
from factory.runners.container import ContainerRunner
from tests.conftest import BuiltToolchain
from tests.support.tiny_rwkv import tiny_rwkv_v5_v6_files

pytestmark = pytest.mark.docker


def _convert(runner: ContainerRunner, image: str, model: Path, out: Path) -> tuple[int, list[str]]:
    source = "/in/model/tiny"
    argv: tuple[str, ...] = ("mlc_llm", "convert_weight", source, "--quantization", "q4f16_1", "--model-type", "rwkv5")
    argv += ("--device", "cpu", "--source", source, "--source-format", "huggingface-safetensor", "--output", "/out")
    mounts = (Mount(source=model, target=source), Mount(source=out, target="/out", read_only=False))
    lines: list[str] = []
    result = runner.run(Step(name="convert_weight", image=image, argv=argv, mounts=mounts), lines.append)
    return result.exit_code, lines


def test_a_read_only_source_needs_the_fetch_time_index(
    conformance_image: BuiltToolchain, docker_client: Any, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for name, content in tiny_rwkv_v5_v6_files(5).items():
        (model / name).write_bytes(content)
    runner = ContainerRunner(docker_client)
    out = tmp_path / "out-1"
    out.mkdir()
    os.chmod(out, 0o777)
    code, lines = _convert(runner, conformance_image.ref, model, out)
    assert code != 0, lines
    assert any("model.safetensors.index.json" in line and "Read-only file system" in line for line in lines), lines
    assert not (model / "model.safetensors.index.json").exists()

    index_single_safetensors(model)
    out = tmp_path / "out-2"
    out.mkdir()
    os.chmod(out, 0o777)
    code, lines = _convert(runner, conformance_image.ref, model, out)
    assert code == 0, lines
    assert (out / "tensor-cache.json").is_file()
