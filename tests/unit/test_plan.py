from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from factory.errors import UsageError
from factory.manifest.load import load_manifest
from factory.manifest.lock import Lock
from factory.plan.graph import BuildGraph, plan
from factory.plan.views import github_matrix, render_json, render_table
from tests.conftest import REPO, WORLD

GOLDEN = REPO / "tests" / "golden" / "source-built.plan.json"


@pytest.fixture(scope="module")
def graph() -> BuildGraph:
    return plan(load_manifest(WORLD), Lock())


def test_convert_once_per_model_and_quant_shared_by_targets(graph: BuildGraph) -> None:
    converts = graph.of_kind("convert")
    compiles = graph.of_kind("compile")
    pairs = {(c.cell.model, c.cell.quant) for c in graph.cells}
    assert len(converts) == len(pairs)
    assert len(converts) < len(compiles) == len(graph.cells) == len(graph.of_kind("bundle"))
    # Every compile of one model x quant depends on the same convert node.
    by_pair: dict[tuple[str, str], set[str]] = {}
    for node in compiles:
        by_pair.setdefault((node.attrs["model"], node.attrs["quant"]), set()).update(node.deps)
    assert all(len(deps) == 1 for deps in by_pair.values())


def test_world_plan_counts(graph: BuildGraph) -> None:
    # legacy: 1b5 x {q4f32_1} + {3b, 7b} x {q0f16, q4f16_1}  -> 5 converts, 15 cells
    # current: 6 models x {q0f16, q4f16_1} -> 12 converts, x 4 targets -> 48 cells
    assert len(graph.of_kind("fetch")) == 9
    assert len(graph.of_kind("tokenizer")) == 9
    assert len(graph.of_kind("convert")) == 17
    assert len(graph.cells) == 63
    legacy = [c for c in graph.cells if c.flow == "legacy"]
    assert len(legacy) == 15 and all(c.cell.model.startswith("rwkv-4-world") for c in legacy)
    assert all(c.toolchain == "legacy-2024.03" for c in legacy)
    assert all(c.params_index == "ndarray-cache.json" for c in legacy)


def test_nodes_come_after_their_dependencies(graph: BuildGraph) -> None:
    seen: set[str] = set()
    for node in graph.nodes:
        assert set(node.deps) <= seen, node.id
        seen.add(node.id)


def test_without_a_lock_floating_inputs_are_unlocked(graph: BuildGraph) -> None:
    assert "hf RWKV/rwkv-4-world-3b@main" in graph.unresolved
    assert "image nvidia/cuda:12.8.0-devel-ubuntu22.04" in graph.unresolved
    assert not any(n.locked for n in graph.of_kind("bundle"))
    assert all(n.locked for n in graph.of_kind("tokenizer"))


def test_a_complete_lock_locks_every_node() -> None:
    loaded = load_manifest(WORLD)
    lock = Lock(
        hf={f"{m.hf.repo}@{m.hf.revision}": f"{i:040x}" for i, m in enumerate(loaded.manifest.models) if m.hf},
        images={t.base_image: "sha256:" + "a" * 64 for t in loaded.manifest.toolchains.values()},
    )
    locked = plan(loaded, lock)
    assert locked.unresolved == ()
    assert all(n.locked for n in locked.nodes)
    fetch = next(n for n in locked.nodes if n.id == "fetch:rwkv-4-world-1b5")
    assert fetch.attrs["revision"] == f"{0:040x}"


def test_selectors_prune_the_graph() -> None:
    loaded = load_manifest(WORLD)
    g = plan(loaded, Lock(), only=["rwkv-5-world-3b/*/cuda-*"], skip=["*/q0f16/*"])
    assert [c.cell.id for c in g.cells] == ["rwkv-5-world-3b/q4f16_1/cuda-sm80", "rwkv-5-world-3b/q4f16_1/cuda-sm90"]
    assert len(g.of_kind("convert")) == 1
    assert {n.id for n in g.of_kind("fetch")} == {"fetch:rwkv-5-world-3b"}


def test_empty_selection_is_an_error() -> None:
    loaded = load_manifest(WORLD)
    with pytest.raises(UsageError, match="selection is empty") as info:
        plan(loaded, Lock(), skip=["*"])
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="matches no cell"):
        plan(loaded, Lock(), only=["rwkv-9-*"])


def test_github_matrix_groups_share_toolchain_runner_and_model(graph: BuildGraph) -> None:
    matrix = github_matrix(graph)
    include = matrix["include"]
    cells_seen: list[str] = []
    by_id = {c.cell.id: c for c in graph.cells}
    for job in include:
        cells = job["cells"].split()
        cells_seen += cells
        assert {(by_id[c].toolchain, by_id[c].runner, by_id[c].os, by_id[c].cell.model) for c in cells} == {
            (job["toolchain"], job["runner"], job["os"], job["model"])
        }
        assert all(isinstance(v, str) for v in job.values())
    assert sorted(cells_seen) == sorted(by_id)
    assert {job["runs_on"] for job in include} == {"ubuntu-24.04", "macos-14"}


def test_table_mentions_every_cell(graph: BuildGraph) -> None:
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(render_table(graph))
    text = console.export_text()
    assert all(c.cell.id in text for c in graph.cells)
    assert "63 cells" in text and "17 convert" in text


def test_world_plan_matches_golden(graph: BuildGraph) -> None:
    rendered = render_json(graph)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(rendered)
    assert GOLDEN.exists(), "run with UPDATE_GOLDEN=1 to create the golden file"
    assert json.loads(rendered) == json.loads(GOLDEN.read_text()), (
        "the plan of manifests/source-built.yaml changed; if intended, regenerate with UPDATE_GOLDEN=1 "
        "and review the diff"
    )


def test_legacy_cuda_compile_flags_are_in_the_json_plan(graph: BuildGraph) -> None:
    """Per target: the TVM tag (which carries what dlight's GEMV rule reads), and the
    CUTLASS and cuBLAS switches that keep the legacy build off the GPU, as full argv."""
    nodes = {n["id"]: n for n in json.loads(render_json(graph))["nodes"]}
    seen = set()
    for node in nodes.values():
        if node["kind"] != "compile" or node["flow"] != "legacy" or not node["target"].startswith("cuda-"):
            continue
        (step,) = node["steps"]
        # GPU compiles run through the kernel check: its report, then the flow's own argv.
        assert step["argv"][:4] == ["python", "/factory/kernel_check_script.py", "/out/kernel-check.json", "--"]
        argv = step["argv"][4:]
        assert argv[:3] == ["python", "-m", "mlc_llm.build"]
        tag = {"cuda-sm80": "nvidia/nvidia-a100", "cuda-sm90": "nvidia/nvidia-h100"}[node["target"]]
        assert argv[argv.index("--target") + 1] == tag == node["target_argument"]
        assert {"--build-model-only", "--no-cutlass-attn", "--no-cutlass-norm"} <= set(argv)
        assert ("--no-cublas" in argv) == (node["quant"] in ("q0f16", "q0f32"))
        seen.add(node["target"])
    assert seen == {"cuda-sm80", "cuda-sm90"}
    current = [n for n in nodes.values() if n["kind"] == "compile" and n["flow"] == "current"]
    assert current and all(n["steps"][0]["argv"][1] == "/factory/kernel_check_script.py" for n in current)
    assert all(n["steps"][0]["argv"][4:6] == ["mlc_llm", "compile"] for n in current)


def test_rwkv5_7b_comes_from_the_eagle_repo(graph: BuildGraph) -> None:
    """RWKV-5 World 7B is published as RWKV/v5-Eagle-7B-HF; RWKV/rwkv-5-world-7b is not a repo."""
    fetch = next(n for n in graph.of_kind("fetch") if n.attrs["model"] == "rwkv-5-world-7b")
    assert fetch.attrs["repo"] == "RWKV/v5-Eagle-7B-HF"
    assert not any("rwkv-5-world-7b" in u for u in graph.unresolved)


def test_keys_ignore_toolchain_names(world_data: dict[str, Any], write_manifest: Callable[..., Path]) -> None:
    before = plan(load_manifest(write_manifest(world_data)), Lock())
    world_data["toolchains"]["legacy-renamed"] = world_data["toolchains"].pop("legacy-2024.03")
    for model in world_data["models"]:
        if model["toolchain"] == "legacy-2024.03":
            model["toolchain"] = "legacy-renamed"
    after = plan(load_manifest(write_manifest(world_data, "renamed.yaml")), Lock())
    assert {n.key for n in before.of_kind("bundle")} == {n.key for n in after.of_kind("bundle")}


def _keys_after(path: Path, edit: Callable[[Path], object]) -> tuple[dict[str, str], dict[str, str]]:
    """Build keys of the manifest at `path` before and after `edit(root)`."""
    before = {n.id: n.key for n in plan(load_manifest(path), Lock()).nodes}
    edit(path.parent)
    after = {n.id: n.key for n in plan(load_manifest(path), Lock()).nodes}
    return before, after


@pytest.fixture
def world_copy(tmp_path: Path, world_data: dict[str, Any], write_manifest: Callable[..., Path]) -> Path:
    """The world manifest with its own copy of images/, so a test can edit them."""
    import shutil

    shutil.copytree(REPO / "images", tmp_path / "images")
    return write_manifest(world_data)


def test_every_key_below_a_toolchain_follows_its_dockerfile(world_copy: Path) -> None:
    def edit(root: Path) -> None:
        dockerfile = root / "images" / "cuda" / "Dockerfile"
        dockerfile.write_text(dockerfile.read_text() + "\nRUN true\n")

    before, after = _keys_after(world_copy, edit)
    graph = plan(load_manifest(world_copy), Lock())
    for node in graph.nodes:
        # Host cells change too: they pack a convert that a Linux builder makes in the image.
        changed = node.kind in ("convert", "compile", "bundle")
        assert (before[node.id] != after[node.id]) == changed, node.id


def test_keys_follow_every_context_file_and_its_mode(world_copy: Path) -> None:
    script = world_copy.parent / "images" / "cuda" / "cmake-config.sh"

    before, after = _keys_after(world_copy, lambda root: script.write_text(script.read_text() + "# touched\n"))
    assert (
        before["convert:rwkv-5-world-3b/q4f16_1@current-v0.20.0"]
        != after["convert:rwkv-5-world-3b/q4f16_1@current-v0.20.0"]
    )
    before, after = _keys_after(world_copy, lambda root: script.chmod(0o644))
    assert (
        before["compile:rwkv-5-world-3b/q4f16_1/cuda-sm80@current-v0.20.0"]
        != after["compile:rwkv-5-world-3b/q4f16_1/cuda-sm80@current-v0.20.0"]
    )


def _touch_bootstrap(root: Path) -> None:
    bootstrap = root / "images" / "metal-runner" / "bootstrap.sh"
    bootstrap.write_text(bootstrap.read_text() + "\n# touched\n")


def test_host_cells_follow_the_metal_runner_prefix(world_copy: Path) -> None:
    before, after = _keys_after(world_copy, _touch_bootstrap)
    graph = plan(load_manifest(world_copy), Lock())
    host = [c for c in graph.cells if c.runner == "host"]
    assert host
    for node in graph.nodes:
        changed = node.kind in ("convert", "compile", "bundle")
        assert (before[node.id] != after[node.id]) == changed, node.id


def test_without_host_targets_the_metal_runner_is_not_an_input(
    tmp_path: Path, world_data: dict[str, Any], write_manifest: Callable[..., Path]
) -> None:
    import shutil

    shutil.copytree(REPO / "images", tmp_path / "images")
    world_data["matrix"]["exclude"].append({"target": "metal-arm64"})
    world_data["matrix"]["include"] = [i for i in world_data["matrix"]["include"] if i.get("target") != "metal-arm64"]
    path = write_manifest(world_data)
    before, after = _keys_after(path, _touch_bootstrap)
    assert before == after


def test_image_content_hash_is_what_the_image_tag_hashes_besides_the_base(world_copy: Path) -> None:
    from factory.toolchains.images.plan import image_content_hash, plan_image

    loaded = load_manifest(world_copy)
    lock = Lock(images={t.base_image: "sha256:" + "c" * 64 for t in loaded.manifest.toolchains.values()})
    name = "current-v0.20.0"
    tag, content = plan_image(loaded, name, lock).tag, image_content_hash(loaded, name)
    (world_copy.parent / "images" / "cuda" / "requirements-base.txt").write_text("changed\n")
    assert plan_image(loaded, name, lock).tag != tag
    assert image_content_hash(loaded, name) != content


def test_the_release_builds_the_proven_toolchain() -> None:
    """manifests/world.yaml, what the release workflow builds: every cell on the wheel
    toolchain CI builds and runs (RWKV-4 through the factory's port since it landed), RWKV-4,
    5, 6 and 7 on every target kind, Metal included."""
    graph = plan(load_manifest(REPO / "manifests" / "world.yaml"), Lock())
    elsewhere = [c.cell.id for c in graph.cells if c.toolchain != "wheel-tvm0.26"]
    assert elsewhere == []
    wheel = [c for c in graph.cells if c.toolchain == "wheel-tvm0.26"]
    targets = {"cpu-x86_64", "cpu-x86_64-v3", "vulkan-x86_64", "webgpu", "metal-arm64"}
    targets |= {"cuda-sm80", "cuda-sm90", "cuda-sm120"}  # sm_120: RTX 50-series
    for generation in ("4", "5", "6", "7"):
        cells = [c for c in wheel if c.cell.model.startswith(f"rwkv-{generation}-world-")]
        assert {c.cell.target for c in cells} == targets, generation
    assert {c.cell.model for c in wheel} >= {"rwkv-7-world-1b5", "rwkv-7-world-2b9"}
    metal = [c for c in wheel if c.cell.target == "metal-arm64"]
    assert metal and all(c.runner == "host" and c.os == "macos" for c in metal)
