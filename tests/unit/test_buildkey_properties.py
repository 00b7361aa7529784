"""Build keys depend on what a node builds from, never on how the manifest is written."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from factory import buildkey
from factory.manifest.load import validate_manifest
from factory.manifest.lock import Lock
from factory.manifest.yamlfile import Located
from factory.plan.graph import BuildGraph, plan
from tests.conftest import WORLD

BASE: dict[str, Any] = yaml.safe_load(WORLD.read_text())
HERE = WORLD  # anchors root: the world manifest names its patch files
LOCK = Lock(
    hf={f"{m['hf']['repo']}@main": f"{i + 1:040x}" for i, m in enumerate(BASE["models"])},
    images={t["base_image"]: "sha256:" + "b" * 64 for t in BASE["toolchains"].values()},
)


def graph_of(data: dict[str, Any], lock: Lock = LOCK) -> BuildGraph:
    return plan(validate_manifest(Located(data), HERE), lock)


def keys(graph: BuildGraph) -> dict[str, str]:
    return {n.id: n.key for n in graph.nodes}


BASE_KEYS = keys(graph_of(BASE))


def reorder(data: dict[str, Any], draw: Callable[[st.SearchStrategy[Any]], Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    out["models"] = draw(st.permutations(out["models"]))
    out["quantizations"] = draw(st.permutations(out["quantizations"]))
    for key in ("targets", "toolchains"):
        items = draw(st.permutations(list(out[key].items())))
        out[key] = dict(items)
    for kind in ("exclude", "include"):
        out["matrix"][kind] = draw(st.permutations(out["matrix"][kind]))
    for model in out["models"]:
        model_items = draw(st.permutations(list(model.items())))
        model.clear()
        model.update(model_items)
    return dict(draw(st.permutations(list(out.items()))))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_keys_do_not_change_when_the_manifest_is_reordered(data: st.DataObject) -> None:
    shuffled = reorder(BASE, data.draw)
    assert keys(graph_of(shuffled)) == BASE_KEYS


HEX40 = st.text("0123456789abcdef", min_size=40, max_size=40)


def _toolchain(name: str, *path: str) -> Callable[[dict[str, Any], Any], None]:
    def edit(data: dict[str, Any], value: Any) -> None:
        node = data["toolchains"][name]
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return edit


def _model(index: int, *path: str) -> Callable[[dict[str, Any], Any], None]:
    def edit(data: dict[str, Any], value: Any) -> None:
        node = data["models"][index]
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value

    return edit


def _target(name: str, field: str) -> Callable[[dict[str, Any], Any], None]:
    def edit(data: dict[str, Any], value: Any) -> None:
        data["targets"][name][field] = value

    return edit


# (edit, a value strategy, a node whose key must change)
MUTATIONS: dict[str, tuple[Callable[[dict[str, Any], Any], None], st.SearchStrategy[Any], str]] = {
    "mlc-llm commit": (
        _toolchain("legacy-2024.03", "mlc_llm", "commit"),
        HEX40,
        "convert:rwkv-4-world-3b/q0f16@legacy-2024.03",
    ),
    "tvm commit": (
        _toolchain("current-v0.20.0", "tvm", "commit"),
        HEX40,
        "compile:rwkv-5-world-3b/q4f16_1/vulkan@current-v0.20.0",
    ),
    "tokenizers-cpp override": (
        _toolchain("legacy-2024.03", "tokenizers_cpp"),
        HEX40.map(lambda c: {"repo": "https://github.com/mlc-ai/tokenizers-cpp", "commit": c}),
        "tokenizer:rwkv-4-world-7b",
    ),
    "build option": (
        _toolchain("current-v0.20.0", "build", "cutlass"),
        st.just(False),
        "bundle:rwkv-6-world-1b6/q0f16/cuda-sm80",
    ),
    "cuda version": (
        _toolchain("legacy-2024.03", "cuda_version"),
        st.sampled_from(["12.2", "12.4", "11.8"]),
        "compile:rwkv-4-world-7b/q4f16_1/cuda-sm90@legacy-2024.03",
    ),
    "python version": (
        _toolchain("current-v0.20.0", "python_version"),
        st.sampled_from(["3.10", "3.12"]),
        "convert:rwkv-5-world-1b5/q0f16@current-v0.20.0",
    ),
    "hf revision": (_model(4, "hf", "revision"), HEX40, "fetch:rwkv-5-world-3b"),
    "context window": (
        _model(5, "context_window"),
        st.integers(1, 4095),
        "convert:rwkv-5-world-7b/q0f16@current-v0.20.0",
    ),
    "target arch": (
        _target("cuda-sm90", "device"),
        st.sampled_from(["sm_89", "sm_90a", "sm_100"]).map(lambda a: {"kind": "cuda", "arch": a}),
        "compile:rwkv-6-world-3b/q0f16/cuda-sm90@current-v0.20.0",
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_keys_change_when_an_input_changes(name: str, data: st.DataObject) -> None:
    edit, values, node_id = MUTATIONS[name]
    changed = copy.deepcopy(BASE)
    edit(changed, data.draw(values))
    new_keys = keys(graph_of(changed))
    assert new_keys[node_id] != BASE_KEYS[node_id]
    # The change flows down: every bundle that depends on the node changes too.
    graph = graph_of(changed)
    dependents = {node_id}
    for node in graph.nodes:
        if dependents & set(node.deps):
            dependents.add(node.id)
    for bundle in (d for d in dependents if d.startswith("bundle:")):
        assert new_keys[bundle] != BASE_KEYS[bundle]
    # Nodes that do not depend on it keep their keys.
    if node_id.startswith("fetch:"):
        assert new_keys["tokenizer:rwkv-5-world-3b"] == BASE_KEYS["tokenizer:rwkv-5-world-3b"]


@settings(max_examples=10, deadline=None)
@given(HEX40)
def test_keys_change_with_the_locked_commit(commit: str) -> None:
    hf = dict(LOCK.hf)
    hf["RWKV/rwkv-4-world-7b@main"] = commit
    new_keys = keys(graph_of(BASE, Lock(hf=hf, images=LOCK.images)))
    changed = commit != LOCK.hf["RWKV/rwkv-4-world-7b@main"]
    assert (new_keys["fetch:rwkv-4-world-7b"] != BASE_KEYS["fetch:rwkv-4-world-7b"]) == changed
    assert new_keys["fetch:rwkv-4-world-3b"] == BASE_KEYS["fetch:rwkv-4-world-3b"]


def test_keys_change_with_the_base_image_digest() -> None:
    images = dict(LOCK.images)
    images["nvidia/cuda:12.8.0-devel-ubuntu22.04"] = "sha256:" + "c" * 64
    new_keys = keys(graph_of(BASE, Lock(hf=LOCK.hf, images=images)))
    assert (
        new_keys["convert:rwkv-5-world-3b/q0f16@current-v0.20.0"]
        != BASE_KEYS["convert:rwkv-5-world-3b/q0f16@current-v0.20.0"]
    )
    assert (
        new_keys["convert:rwkv-4-world-3b/q0f16@legacy-2024.03"]
        == BASE_KEYS["convert:rwkv-4-world-3b/q0f16@legacy-2024.03"]
    )


def test_keys_change_with_the_recipe_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buildkey, "RECIPE_VERSION", "999")
    new_keys = keys(graph_of(BASE))
    assert all(new_keys[node] != key for node, key in BASE_KEYS.items())


def test_keys_change_with_patch_contents(tmp_path: Path) -> None:
    patch = tmp_path / "p.patch"
    data = copy.deepcopy(BASE)
    data["root"] = "."
    data["toolchains"]["legacy-2024.03"]["patches"] = [{"path": "p.patch"}]
    data["toolchains"]["current-v0.20.0"].pop("patches")  # its files live in the repository
    results = []
    for body in ("one\n", "two\n"):
        patch.write_text(body)
        results.append(keys(plan(validate_manifest(Located(data), tmp_path / "m.yaml"), LOCK)))
    node = "compile:rwkv-4-world-3b/q0f16/cuda-sm80@legacy-2024.03"
    assert results[0][node] != results[1][node]
    assert (
        results[0]["compile:rwkv-5-world-3b/q0f16/cuda-sm80@current-v0.20.0"]
        == results[1]["compile:rwkv-5-world-3b/q0f16/cuda-sm80@current-v0.20.0"]
    )
