"""The CLI through typer's runner and as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from factory.cli import app
from tests.conftest import REPO, WORLD, copy_patches

runner = CliRunner()


def test_plan_json_lists_every_cell() -> None:
    result = runner.invoke(app, ["plan", "--matrix", str(WORLD), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["counts"]["convert"] == 17 and len(doc["cells"]) == 63
    legacy = {c["id"] for c in doc["cells"] if c["toolchain"] == "legacy-2024.03"}
    assert legacy and all(c.startswith("rwkv-4-world-") for c in legacy)
    assert all(c["toolchain"] == "legacy-2024.03" for c in doc["cells"] if c["model"].startswith("rwkv-4-"))
    for node in doc["nodes"]:
        assert {"kind", "id", "key", "deps"} <= set(node) and len(node["key"]) == 64


def test_plan_github_is_a_matrix_object() -> None:
    result = runner.invoke(app, ["plan", "-m", str(WORLD), "-f", "github", "--only", "rwkv-5-*/*/*"])
    assert result.exit_code == 0, result.output
    matrix = json.loads(result.stdout)
    assert set(matrix) == {"include"} and matrix["include"]
    assert {job["toolchain"] for job in matrix["include"]} == {"current-v0.20.0"}


def test_plan_table_is_the_default() -> None:
    result = runner.invoke(app, ["plan", "-m", str(WORLD), "--only", "rwkv-4-world-3b/q0f16/*"])
    assert result.exit_code == 0, result.output
    assert "rwkv-4-world-3b/q0f16/cuda-sm80" in result.stdout and "3 cells" in result.stdout


def test_bad_manifest_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(WORLD.read_text().replace("toolchain: legacy-2024.03}", "toolchain: legacy}", 1))
    result = runner.invoke(app, ["plan", "-m", str(bad)])
    assert result.exit_code == 2
    assert "models[0].toolchain: unknown toolchain 'legacy'" in result.stderr
    assert f"{bad}:" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.output


def test_empty_selection_exits_2() -> None:
    result = runner.invoke(app, ["plan", "-m", str(WORLD), "--skip", "*"])
    assert result.exit_code == 2
    assert "selection is empty" in result.stderr


def test_locked_plan_fails_without_a_lock(tmp_path: Path) -> None:
    manifest = tmp_path / "world.yaml"
    manifest.write_text(WORLD.read_text().replace("root: ..", "root: ."))
    copy_patches(yaml.safe_load(WORLD.read_text()), tmp_path)
    result = runner.invoke(app, ["plan", "-m", str(manifest), "--locked"])
    assert result.exit_code == 2
    assert "hf RWKV/rwkv-4-world-1b5@main: no lock entry" in result.stderr
    check = runner.invoke(app, ["lock", "-m", str(manifest), "--check"])
    assert check.exit_code == 2 and "factory lock" in check.stderr


def test_schema_is_json_schema() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["type"] == "object"
    assert {"toolchains", "models", "quantizations", "targets"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("factory ")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, check=False, env={**os.environ})


def test_python_dash_m_factory_as_a_subprocess() -> None:
    result = _run(sys.executable, "-m", "factory", "plan", "--matrix", "manifests/world.yaml", "--format", "github")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["include"]


def test_console_script_as_a_subprocess(tmp_path: Path) -> None:
    script = shutil.which("factory") or str(Path(sys.executable).parent / "factory")
    if not Path(script).exists():
        pytest.fail("the `factory` console script is not installed; run the README's install command")
    bad = tmp_path / "bad.yaml"
    bad.write_text("manifest_version: 1\nrelease: {name: x, version: '1'}\ntoolchains: {}\nmodels: []\n")
    result = _run(script, "plan", "--matrix", str(bad))
    assert result.returncode == 2
    assert "quantizations: required key is missing" in result.stderr
    assert "Traceback" not in result.stderr
