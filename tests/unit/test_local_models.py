"""Local model sources (a folder instead of a hub repo) and `factory example-model`:
identity by content, bad input, the copy a build takes, and the example manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory.cells.fetch import copy_local
from factory.checkpoints.example import checkpoint_files, write_example_model
from factory.errors import InputError
from factory.manifest.load import load_manifest
from factory.manifest.lock import Lock, floating_refs
from factory.plan.graph import BuildGraph, plan
from tests.conftest import REPO
from tests.support.run import factory

WORLD = REPO / "manifests" / "world.yaml"
EXAMPLE = REPO / "manifests" / "example.yaml"
IMAGE_LOCK = Lock(local_images={"debian:bookworm-slim": "sha256:" + "a" * 64})


def _manifest(tmp_path: Path, models: list[dict[str, Any]]) -> Path:
    """manifests/example.yaml with its root at the repository and these models."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["root"] = str(REPO)
    data["models"] = [{"type": "rwkv6-world", "toolchain": "wheel-tvm0.26", **m} for m in models]
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _model_folder(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    for name, data in checkpoint_files(6, seed=seed).items():
        (folder / name).write_bytes(data)
    return folder


def _keys(graph: BuildGraph) -> dict[str, str]:
    return {n.id: n.key for n in graph.nodes}


@pytest.fixture
def two_models(tmp_path: Path) -> tuple[Path, Path, Path]:
    a = _model_folder(tmp_path / "a")
    b = _model_folder(tmp_path / "b", seed=1)
    path = _manifest(tmp_path, [{"name": "one", "local": {"path": str(a)}}, {"name": "two", "local": {"path": str(b)}}])
    return path, a, b


def test_a_local_model_needs_no_lock_entry_and_is_known_by_its_content(two_models: tuple[Path, Path, Path]) -> None:
    path, a, _ = two_models
    loaded = load_manifest(path)
    assert floating_refs(loaded.manifest).hf == ()
    graph = plan(loaded, IMAGE_LOCK)
    assert graph.unresolved == () and all(n.locked for n in graph.nodes)
    fetch = next(n for n in graph.nodes if n.id == "fetch:one")
    local = loaded.local_models["one"]
    assert local.files == ("config.json", "model.safetensors")  # the README is not an input
    assert fetch.attrs["sha256"] == local.digest and fetch.attrs["local"] == str(a.resolve())


def test_same_files_give_the_same_keys_wherever_they_lie(two_models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    path, a, _ = two_models
    before = _keys(plan(load_manifest(path), IMAGE_LOCK))
    moved = tmp_path / "elsewhere" / "a"
    shutil.copytree(a, moved)
    (moved / "README.md").write_text("a different card: not an input of any node\n")
    data = yaml.safe_load(path.read_text())
    data["models"][0]["local"]["path"] = str(moved)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert _keys(plan(load_manifest(path), IMAGE_LOCK)) == before


@pytest.mark.parametrize("changed", ["model.safetensors", "config.json"])
def test_one_changed_file_rebuilds_the_nodes_that_depend_on_it(
    two_models: tuple[Path, Path, Path], changed: str
) -> None:
    path, a, _ = two_models
    before = _keys(plan(load_manifest(path), IMAGE_LOCK))
    target = a / changed
    data = bytearray(target.read_bytes())
    if changed == "config.json":
        config = json.loads(data)
        config["context_length"] = 2048
        data = bytearray(json.dumps(config).encode())
    else:
        data[-1] ^= 1  # one bit of the last weight
    target.write_bytes(bytes(data))
    after = _keys(plan(load_manifest(path), IMAGE_LOCK))
    differ = {node for node in before if before[node] != after[node]}
    # Model one's fetch and everything built from its weights; its tokenizer and all of model two stay.
    assert differ == {node for node in before if node.split(":", 1)[1].split("/")[0].split("@")[0] == "one"} - {
        "tokenizer:one"
    }
    assert {node.split(":", 1)[0] for node in differ} == {"fetch", "convert", "compile", "bundle"}


def _problems(path: Path) -> list[tuple[str, str, str]]:
    with pytest.raises(InputError) as caught:
        load_manifest(path)
    return [(p.field, p.message, p.fix) for p in caught.value.problems]


def test_bad_local_sources_are_named_with_their_field_and_fix(tmp_path: Path) -> None:
    good = _model_folder(tmp_path / "good")
    no_config = _model_folder(tmp_path / "no-config")
    (no_config / "config.json").unlink()
    broken_config = _model_folder(tmp_path / "broken-config")
    (broken_config / "config.json").write_text("{not json")
    torch_only = _model_folder(tmp_path / "torch-only")
    (torch_only / "model.safetensors").rename(torch_only / "pytorch_model.bin")
    no_weights = _model_folder(tmp_path / "no-weights")
    (no_weights / "model.safetensors").unlink()
    (tmp_path / "a-file").write_text("x")
    path = _manifest(
        tmp_path,
        [
            {"name": "missing", "local": {"path": str(tmp_path / "nowhere")}},
            {"name": "file", "local": {"path": str(tmp_path / "a-file")}},
            {"name": "no-config", "local": {"path": str(no_config)}},
            {"name": "broken-config", "local": {"path": str(broken_config)}},
            {"name": "torch-only", "local": {"path": str(torch_only)}},
            {"name": "no-weights", "local": {"path": str(no_weights)}},
            {"name": "both", "local": {"path": str(good)}, "hf": {"repo": "RWKV/x"}},
            {"name": "neither"},
        ],
    )
    problems = _problems(path)
    by_field: dict[str, list[tuple[str, str]]] = {}
    for field, message, fix in problems:
        by_field.setdefault(field, []).append((message, fix))
    [(message, fix)] = by_field["models[0].local.path"]
    assert "does not exist" in message and "factory example-model" in fix
    [(message, _)] = by_field["models[1].local.path"]
    assert "is not a folder" in message
    [(message, fix)] = by_field["models[2].local.path"]
    assert "has no config.json" in message and "transformers layout" in fix
    [(message, _)] = by_field["models[3].local.path"]
    assert "config.json is not a JSON object" in message
    [(message, fix)] = by_field["models[4].local.format"]
    assert "has no safetensors weights" in message and fix == "set format: pytorch"
    [(message, fix)] = by_field["models[5].local.format"]
    assert "has no safetensors weights" in message and "*.safetensors or pytorch_model*.bin" in fix
    [(message, fix)] = by_field["models[6]"]
    assert "both hf and local" in message and "exactly one" in fix
    [(message, _)] = by_field["models[7]"]
    assert "neither hf nor local" in message
    assert len(problems) == 8


def test_the_cli_refuses_a_missing_folder_with_exit_code_2_and_writes_no_lock(tmp_path: Path) -> None:
    path = _manifest(tmp_path, [{"name": "missing", "local": {"path": "no/such/folder"}}])
    done = factory("lock", "-m", str(path), "--local-images", cwd=tmp_path)
    assert done.returncode == 2
    assert "models[0].local.path" in done.stderr and "does not exist" in done.stderr
    assert f"{path}:" in done.stderr  # the file and its line
    assert not path.with_suffix(".lock").exists()


def test_a_build_copies_the_planned_files_and_refuses_a_folder_changed_since(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "model")
    path = _manifest(tmp_path, [{"name": "one", "local": {"path": str(folder)}}])
    digest = load_manifest(path).local_models["one"].digest
    dest = tmp_path / "out" / "one"
    copy_local(folder, "safetensors", digest, dest, field="models[0].local.path")
    assert sorted(p.name for p in dest.iterdir()) == [
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",  # written beside a lone shard, as convert_weight wants
    ]
    assert (dest / "model.safetensors").stat().st_ino != (folder / "model.safetensors").stat().st_ino
    (folder / "config.json").write_text(json.dumps({"edited": True}))
    with pytest.raises(InputError) as caught:
        copy_local(folder, "safetensors", digest, tmp_path / "out2" / "one", field="models[0].local.path")
    [problem] = caught.value.problems
    assert problem.field == "models[0].local.path" and "changed after the build was planned" in problem.message


def test_example_model_is_deterministic_rerunnable_and_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    done = factory("example-model", str(folder), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote a tiny RWKV-6 World checkpoint" in done.stdout
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(first) == {"config.json", "model.safetensors", "README.md"}
    config = json.loads(first["config.json"])
    assert config["model_type"] == "rwkv6" and config["vocab_size"] == 65536
    assert folder.stat().st_mode & 0o777 == 0o755
    again = factory("example-model", str(folder), cwd=tmp_path)
    assert again.returncode == 0 and "already there" in again.stdout
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    other = factory("example-model", str(folder), "--seed", "1", cwd=tmp_path)
    assert other.returncode == 2 and "DIR" in other.stderr and "name a new folder" in other.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left behind
    assert write_example_model(tmp_path / "v5", version=5).written


def test_the_example_manifest_uses_the_wheel_toolchain_word_for_word(tmp_path: Path) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    world = yaml.safe_load(WORLD.read_text())
    assert example["toolchains"] == {"wheel-tvm0.26": world["toolchains"]["wheel-tvm0.26"]}
    assert example["targets"] == {name: world["targets"][name] for name in ("cpu-x86_64", "vulkan-x86_64")}
    folder = tmp_path / "example" / "model"
    write_example_model(folder)
    data = dict(example, root=str(REPO))
    data["models"][0]["local"]["path"] = str(folder)
    path = tmp_path / "example.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    graph = plan(load_manifest(path), IMAGE_LOCK)
    assert [c.cell.id for c in graph.cells] == [
        "rwkv-6-world-example/q4f32_1/cpu-x86_64",
        "rwkv-6-world-example/q4f32_1/vulkan-x86_64",
    ]
    assert graph.unresolved == ()


def test_a_published_bundle_names_a_local_model_without_the_builders_folders(tmp_path: Path) -> None:
    """Provenance and model card carry the content hash and this path, never an absolute
    path of the machine that built the bundle (issue 38: the card showed /tmp/...)."""
    from factory.cells.bundle_step import portable_path

    root = tmp_path / "project"
    (root / "example" / "model").mkdir(parents=True)
    assert portable_path(root, "example/model") == "example/model"
    assert portable_path(root, str(root / "example" / "model")) == "example/model"
    assert portable_path(root, str(tmp_path / "elsewhere" / "rwkv-7-g1")) == "rwkv-7-g1"
    assert portable_path(root, "../outside/model") == "model"
    assert portable_path(root, None) is None
