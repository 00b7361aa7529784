from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from factory.errors import InputError
from factory.manifest.load import load_manifest
from tests.conftest import WORLD

Edit = Callable[[dict[str, Any]], None]


def test_world_manifest_loads_with_the_real_pins() -> None:
    loaded = load_manifest(WORLD)
    m = loaded.manifest
    legacy = m.toolchains["legacy-2024.03"]
    current = m.toolchains["current-v0.20.0"]
    assert legacy.flow == "legacy"
    assert legacy.mlc_llm.commit.startswith("b44cdc53")
    assert legacy.tvm_identity.startswith("f06d486b")
    assert current.flow == "current"
    assert current.mlc_llm.commit.startswith("bb586e51")
    assert current.tvm_identity.startswith("b628d91f")
    rwkv4 = [model for model in m.models if model.type == "rwkv4-world"]
    assert {model.name for model in rwkv4} == {"rwkv-4-world-1b5", "rwkv-4-world-3b", "rwkv-4-world-7b"}
    assert all(model.toolchain == "legacy-2024.03" for model in rwkv4)
    assert {"q0f16", "q4f16_1", "q4f32_1"} <= set(m.quantizations)
    assert m.targets["cuda-sm90"].device == {"kind": "cuda", "arch": "sm_90"}
    assert m.targets["metal-arm64"].device == "metal:generic"


def test_manifest_models_are_frozen() -> None:
    model = load_manifest(WORLD).manifest.models[0]
    with pytest.raises(Exception, match="frozen"):
        model.name = "other"  # type: ignore[misc]


def _set(path: tuple[Any, ...], value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        node: Any = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return edit


def _delete(path: tuple[Any, ...]) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        node: Any = data
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return edit


def _append(path: tuple[Any, ...], value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        node: Any = data
        for part in path:
            node = node[part]
        node.append(value)

    return edit


BAD_INPUTS: dict[str, tuple[Edit, str, str]] = {
    # name: (edit, field named, words in the message)
    "unknown top-level key": (_set(("colour",), "blue"), "colour", "unknown key"),
    "unknown nested key": (
        _set(("toolchains", "legacy-2024.03", "cuda_versoin"), "12.1"),
        "toolchains.legacy-2024.03.cuda_versoin",
        "unknown key",
    ),
    "missing required key": (_delete(("models", 0, "type")), "models[0].type", "required"),
    "a model without weights": (_delete(("models", 0, "hf")), "models[0]", "neither hf nor local"),
    "a TVM wheel toolchain asks for CUTLASS": (
        _set(("toolchains", "current-v0.20.0", "tvm"), {"wheel": "apache-tvm==0.26.0"}),
        "toolchains.current-v0.20.0.build.cutlass",
        "apache-tvm wheel is not built with cutlass",
    ),
    "unknown weight format": (_set(("models", 0, "hf", "format"), "gguf"), "models[0].hf.format", "safetensors"),
    "unknown toolchain": (_set(("models", 0, "toolchain"), "nope"), "models[0].toolchain", "unknown toolchain"),
    "unknown quantization": (_append(("quantizations",), "q4f16"), "quantizations[3]", "unknown quantization"),
    "quantization unknown to the legacy toolchain": (
        _append(("quantizations",), "q4bf16_1"),
        "quantizations[3]",
        "does not know quantization 'q4bf16_1'",
    ),
    "quantization the model type cannot take": (
        _append(("quantizations",), "q4f16_ft"),
        "quantizations[3]",
        "cannot apply 'q4f16_ft' to rwkv6-world",
    ),
    "unknown target in a matrix rule": (
        _append(("matrix", "exclude"), {"target": "cuda-sm70"}),
        "matrix.exclude[4]",
        "matches no cell",
    ),
    "duplicate model names": (_set(("models", 1, "name"), "rwkv-4-world-1b5"), "models[1].name", "duplicate"),
    "duplicate quantizations": (_append(("quantizations",), "q0f16"), "quantizations[3]", "duplicate"),
    "invalid HF repo id": (_set(("models", 0, "hf", "repo"), "not a repo"), "models[0].hf.repo", "repo id"),
    "HF repo id without org": (_set(("models", 0, "hf", "repo"), "rwkv-4-world"), "models[0].hf.repo", "repo id"),
    "name with ..": (_set(("models", 0, "name"), "rwkv-world-.."), "models[0].name", "safe folder name"),
    "name with a slash": (_set(("models", 0, "name"), "rwkv/world"), "models[0].name", "safe folder name"),
    "absolute name": (_set(("models", 0, "name"), "/abs/rwkv-world"), "models[0].name", "safe folder name"),
    "target name escaping": (
        _set(("targets", "../evil"), {"device": "llvm", "runner": "container", "os": "linux"}),
        "targets.../evil",
        "safe folder name",
    ),
    "target no runner serves": (
        _set(("targets", "cuda-sm80", "device"), "opencl:generic"),
        "targets.cuda-sm80.device",
        "no runner serves a 'opencl' device",
    ),
    "runner on the wrong os": (
        _set(("targets", "cuda-sm80", "os"), "macos"),
        "targets.cuda-sm80.runner",
        "no runner serves",
    ),
    "probing device": (_set(("targets", "vulkan", "device"), "cuda"), "targets.vulkan", "probes a local GPU"),
    "rwkv4 on the current flow without the port": (
        _set(("models", 0, "toolchain"), "current-v0.20.0"),
        "models[0].type",
        "rwkv4-world needs the mlc-llm model type 'rwkv4'",
    ),
    "rwkv5 on the legacy flow": (
        _set(("models", 3, "toolchain"), "legacy-2024.03"),
        "models[3].type",
        "cannot build rwkv5-world",
    ),
    "legacy model name without world": (
        _set(("models", 1, "name"), "rwkv-4-3b"),
        "models[1].name",
        "'rwkv' and 'world'",
    ),
    "commit read as a number": (
        _set(("toolchains", "legacy-2024.03", "tvm", "commit"), 1234),
        "toolchains.legacy-2024.03.tvm.commit",
        "valid string",
    ),
    "short commit": (
        _set(("toolchains", "legacy-2024.03", "tvm", "commit"), "f06d486b"),
        "toolchains.legacy-2024.03.tvm.commit",
        "pattern",
    ),
    "unknown flow": (
        _set(("toolchains", "legacy-2024.03", "flow"), "ancient"),
        "toolchains.legacy-2024.03.flow",
        "'legacy' or 'current'",
    ),
    "override without a patch": (
        _set(("models", 0, "overrides"), {"first_layer_fp32": True}),
        "models[0].overrides.first_layer_fp32",
        "no patch",
    ),
    "missing patch file": (
        _set(("toolchains", "legacy-2024.03", "patches"), [{"path": "patches/none.patch"}]),
        "toolchains.legacy-2024.03.patches[0].path",
        "not found",
    ),
    "patch escaping the root": (
        _set(("toolchains", "legacy-2024.03", "patches"), [{"path": "../../etc/passwd"}]),
        "toolchains.legacy-2024.03.patches[0].path",
        "leaves the manifest root",
    ),
    "backend the toolchain lacks": (
        _set(("matrix", "exclude"), [{"quant": "q4f32_1"}]),
        "targets.vulkan.device",
        "not built with vulkan",
    ),
    "cutlass without cuda": (
        _set(("toolchains", "current-v0.20.0", "build", "cuda"), False),
        "toolchains.current-v0.20.0.build.cutlass",
        "needs CUDA",
    ),
    "bad store scheme": (_set(("store",), "ftp://host/x"), "store", "unsupported store scheme"),
    "legacy dylib suffix": (
        _set(("targets", "metal-arm64", "suffix"), "dylib"),
        "targets.metal-arm64",
        "always writes a .so",
    ),
    "conversation template": (_set(("models", 0, "conv_template"), "chatml"), "models[0].conv_template", "rwkv_world"),
    "context window": (_set(("models", 0, "context_window"), 0), "models[0].context_window", "greater than 0"),
    "empty quantizations": (_set(("quantizations",), []), "quantizations", "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_file_line_field_and_fix(
    case: str, world_data: dict[str, Any], write_manifest: Callable[[dict[str, Any]], Path]
) -> None:
    edit, field, words = BAD_INPUTS[case]
    edit(world_data)
    path = write_manifest(world_data)
    with pytest.raises(InputError) as info:
        load_manifest(path)
    error = info.value
    assert error.exit_code == 2
    matching = [p for p in error.problems if p.field == field and words in p.message]
    assert matching, f"no problem for {field!r} with {words!r} in:\n{error.render()}"
    problem = matching[0]
    assert problem.file == str(path)
    assert problem.line is not None and problem.line > 0
    assert problem.fix
    rendered = error.render()
    assert f"{path}:{problem.line}" in rendered and "fix:" in rendered


def test_every_problem_is_reported_at_once(
    world_data: dict[str, Any], write_manifest: Callable[[dict[str, Any]], Path]
) -> None:
    world_data["models"][0]["toolchain"] = "nope"
    world_data["models"][4]["hf"]["repo"] = "bad repo"
    with pytest.raises(InputError) as info:
        load_manifest(write_manifest(world_data))
    assert {p.field for p in info.value.problems} >= {"models[0].toolchain", "models[4].hf.repo"}


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_manifest(tmp_path / "absent.yaml")


def test_include_readmits_excluded_cells(
    world_data: dict[str, Any], write_manifest: Callable[[dict[str, Any]], Path]
) -> None:
    from factory.manifest.matrix import expand_cells

    cells = {c.id for c in expand_cells(load_manifest(write_manifest(world_data)).manifest)}
    assert "rwkv-4-world-1b5/q4f32_1/cuda-sm80" in cells
    assert "rwkv-4-world-1b5/q0f16/cuda-sm80" not in cells
    assert "rwkv-5-world-3b/q4f32_1/cuda-sm80" not in cells
    assert not any(c.startswith("rwkv-4-") and c.endswith("/vulkan") for c in cells)


def test_patches_are_hashed_into_the_loaded_manifest(
    world_data: dict[str, Any], write_manifest: Callable[[dict[str, Any]], Path], tmp_path: Path
) -> None:
    patch = tmp_path / "patches" / "fp32.patch"
    patch.parent.mkdir()
    patch.write_text("--- a/x\n+++ b/x\n")
    world_data["toolchains"]["legacy-2024.03"]["patches"] = [
        {"path": "patches/fp32.patch", "provides": ["first_layer_fp32"]}
    ]
    world_data["models"][0]["overrides"] = {"first_layer_fp32": True}
    loaded = load_manifest(write_manifest(world_data))
    import hashlib

    assert loaded.file_digests["patches/fp32.patch"] == hashlib.sha256(patch.read_bytes()).hexdigest()
