"""The recorded upstream contracts: one file per pinned mlc-llm commit, read by the
factory's flow tables and by the conformance stand-in alike. These tests hold the
two readers to the same file, and the factory's rendered argv to the pinned CLIs,
without Docker: the stand-in's parsers are imported on the host."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from factory.manifest.load import load_manifest
from factory.manifest.lock import Lock
from factory.plan.graph import plan
from factory.toolchains import FLOWS
from factory.toolchains.base import MODEL_ROOT
from factory.toolchains.contract import contract_for, current_contract, legacy_contract

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = REPO / "factory" / "toolchains" / "contracts"
STANDIN = REPO / "tests" / "toolchains" / "conformance" / "standin"
LEGACY_PIN = "b44cdc53381bd804ef000775bb280de1c7ca6439"
CURRENT_PIN = "bb586e51eb20cba2e82216b75d22d8dd6657cce1"
# An upstream location: a path (optionally under the TVM fork, "tvm:") and a line or a line range.
_SOURCE = re.compile(r"^(tvm:)?[\w./-]+\.(py|cc|sh|cmake|toml|txt)(:\d+(-\d+)?)?$")


@pytest.fixture(scope="module")
def standin() -> Iterator[dict[str, ModuleType]]:
    """The stand-in's modules, imported from the source tree (they read contracts/ through its link)."""
    sys.path.insert(0, str(STANDIN))
    try:
        modules = {name: importlib.import_module(f"mlc_llm.{name}") for name in ("_contract", "build", "__main__")}
        yield modules
    finally:
        sys.path.remove(str(STANDIN))
        for name in [m for m in sys.modules if m == "mlc_llm" or m.startswith("mlc_llm.")]:
            del sys.modules[name]


def _sources(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if (key == "source" or key.endswith("_source")) and isinstance(item, str):
                yield f"{path}.{key}", item
            else:
                yield from _sources(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _sources(item, f"{path}[{index}]")


def test_one_contract_per_pinned_commit_and_the_world_pins_have_one() -> None:
    files = sorted(p.stem for p in CONTRACTS.glob("*.json"))
    assert files == [LEGACY_PIN, CURRENT_PIN]
    loaded = load_manifest(REPO / "manifests" / "source-built.yaml")
    for name, toolchain in loaded.manifest.toolchains.items():
        contract = contract_for(toolchain.mlc_llm.commit)
        assert contract is not None, name
        assert contract.flow == toolchain.flow
        assert contract.mlc_llm.commit == toolchain.mlc_llm.commit == FLOWS[toolchain.flow].read_at


@pytest.mark.parametrize("pin", [LEGACY_PIN, CURRENT_PIN])
def test_every_recorded_fact_names_its_upstream_file_and_line(pin: str) -> None:
    data = json.loads((CONTRACTS / f"{pin}.json").read_text())
    sources = list(_sources(data))
    assert len(sources) > 40
    for where, source in sources:
        if where.startswith(".commands.") and where.count(".") == 3:
            continue  # a command's own source names its file
        assert _SOURCE.match(source), f"{where}: {source!r} is not path:line"
    # Every CLI argument and every quantization name has its own line.
    for command in data["commands"].values():
        assert all(re.search(r":\d+$", a["source"]) for a in command["arguments"])
    assert all(re.search(r":\d+$", q["source"]) for q in data["quantizations"]["names"])


def test_the_factory_tables_are_the_recorded_ones() -> None:
    legacy, current = legacy_contract(LEGACY_PIN), current_contract(CURRENT_PIN)
    assert FLOWS["legacy"].cli_quantizations == legacy.quantizations.all()
    assert FLOWS["current"].cli_quantizations == current.quantizations.all()
    assert FLOWS["legacy"].params_index == legacy.params_index.name == "ndarray-cache.json"
    assert FLOWS["current"].params_index == current.params_index.name == "tensor-cache.json"
    # model.MODELS: rwkv6 registers no FasterTransformer quantization, rwkv5 does.
    assert FLOWS["current"].model_quantizations("rwkv5-world") == current.model_quantizations("rwkv5")
    assert FLOWS["current"].model_quantizations("rwkv6-world") == current.model_quantizations("rwkv6")
    assert "q4f16_ft" in current.model_quantizations("rwkv5")
    assert "q4f16_ft" not in current.model_quantizations("rwkv6")
    rwkv4 = FLOWS["legacy"].model_quantizations("rwkv4-world")
    assert rwkv4 is not None and rwkv4 <= legacy.quantizations.all()


def test_the_legacy_quantizations_are_the_pinned_ones() -> None:
    """The old stand-in accepted names b44cdc53 rejects and rejected ones it accepts."""
    names = legacy_contract(LEGACY_PIN).quantizations.all()
    assert {"autogptq_llama_q4f16_0", "autogptq_llama_q4f16_1", "q8f16_ft", "q8f16_1"} <= names
    assert not {"q8f16_0", "q4f16_awq"} & names


def _parser_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: action for action in parser._actions for s in action.option_strings if s not in ("-h", "--help")}


@pytest.mark.parametrize(
    ("pin", "command"),
    [(LEGACY_PIN, "build")] + [(CURRENT_PIN, c) for c in ("convert_weight", "gen_config", "compile")],
)
def test_the_standin_accepts_exactly_the_recorded_arguments(
    standin: dict[str, ModuleType], pin: str, command: str
) -> None:
    raw = standin["_contract"].load(pin)
    parser = standin["_contract"].parser(raw, command, "x")
    recorded = (legacy_contract(pin) if pin == LEGACY_PIN else current_contract(pin)).commands[command]
    options = _parser_options(parser)
    assert set(options) == recorded.flags()
    positionals = [a.dest for a in parser._actions if not a.option_strings]
    assert positionals == [a.name for a in recorded.arguments if a.kind == "positional"]
    quantization = options["--quantization"]
    contract = legacy_contract(pin) if pin == LEGACY_PIN else current_contract(pin)
    assert quantization.choices is not None and set(quantization.choices) == contract.quantizations.all()


def test_the_legacy_standin_rejects_what_b44cdc53_rejects(standin: dict[str, ModuleType]) -> None:
    contract = standin["_contract"].load(LEGACY_PIN)
    parser = standin["_contract"].parser(contract, "build", "python -m mlc_llm.build")
    base = ["--model", "/in/model/rwkv-4-world-3b", "--target", "llvm"]
    assert parser.parse_args([*base, "--quantization", "autogptq_llama_q4f16_1"]).quantization
    assert parser.parse_args([*base, "--convert-weight-only"]).convert_weights_only
    for wrong in ("q8f16_0", "q4f16_awq"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--quantization", wrong])


def test_the_current_standin_has_the_recorded_choices(standin: dict[str, ModuleType]) -> None:
    contract = standin["_contract"].load(CURRENT_PIN)
    parser = standin["_contract"].parser(contract, "gen_config", "mlc_llm gen_config")
    options = _parser_options(parser)
    assert "rwkv_world" in (options["--conv-template"].choices or [])
    assert {"auto", "rwkv5", "rwkv6"} <= set(options["--model-type"].choices or [])
    with pytest.raises(SystemExit):
        parser.parse_args(["cfg", "--quantization", "q4f16_1", "--conv-template", "nope", "-o", "out"])
    with pytest.raises(SystemExit):
        parser.parse_args(["cfg", "--quantization", "q9f9", "--conv-template", "rwkv_world", "-o", "out"])


def _world_steps() -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every command the world matrix renders: convert (both source formats) and compile."""
    loaded = load_manifest(REPO / "manifests" / "source-built.yaml")
    models = {m.name: m for m in loaded.manifest.models}
    graph = plan(loaded, Lock())
    for cell in graph.cells:
        flow = FLOWS[cell.flow]
        model = models[cell.cell.model]
        target = loaded.manifest.targets[cell.cell.target]
        for source_format in ("huggingface-safetensor", "huggingface-torch"):
            for step in flow.convert_steps(model, cell.cell.quant, source_format):
                yield cell.flow, step.argv
        build = loaded.manifest.toolchains[cell.toolchain].build
        for step in flow.compile_steps(model, cell.cell.quant, cell.cell.target, target, build):
            yield cell.flow, step.argv


def test_every_rendered_argv_parses_with_the_standin(standin: dict[str, ModuleType]) -> None:
    """The factory's argv against the recorded CLI, as the stand-in in the image parses it."""
    contracts = {"legacy": standin["_contract"].load(LEGACY_PIN), "current": standin["_contract"].load(CURRENT_PIN)}
    seen = 0
    for flow, argv in _world_steps():
        contract = contracts[flow]
        if flow == "legacy":
            assert argv[:3] == tuple(contract["commands"]["build"]["argv"])
            command, rest = "build", list(argv[3:])
        else:
            command, rest = argv[1], list(argv[2:])
        parsed = standin["_contract"].parser(contract, command, "x").parse_args(rest)
        if flow == "legacy":
            # The target the legacy stand-in accepts: a tag or a string carrying dlight's attributes.
            kind = standin["build"]._target_kind(contract, parsed.target)
            assert kind in ("cuda", "metal", "vulkan", "cpu")
            assert Path(parsed.model).parent == Path(MODEL_ROOT)
        seen += 1
    assert seen > 100


def test_the_legacy_standin_fails_a_bare_cuda_arch_string_as_dlight_would(standin: dict[str, ModuleType]) -> None:
    contract = standin["_contract"].load(LEGACY_PIN)
    with pytest.raises(SystemExit):
        standin["build"]._target_kind(contract, "cuda -arch=sm_80")  # what the factory rendered before
    assert standin["build"]._target_kind(contract, "nvidia/nvidia-a100") == "cuda"
    with pytest.raises(SystemExit):
        standin["build"]._target_kind(contract, "cuda")  # probes the local GPU


def test_the_standin_is_told_its_commit_by_the_image() -> None:
    dockerfile = (REPO / "tests" / "toolchains" / "conformance" / "Dockerfile").read_text()
    assert "MLC_STANDIN_COMMIT=${MLC_LLM_COMMIT}" in dockerfile
    link = STANDIN / "mlc_llm" / "contracts"
    assert link.is_symlink() and link.resolve() == CONTRACTS.resolve()


def test_the_conformance_context_carries_real_contract_files(tmp_path: Path) -> None:
    from tests.support.docker import conformance_context

    context = conformance_context(tmp_path / "conformance")
    copied = context / "standin" / "mlc_llm" / "contracts"
    assert not copied.is_symlink()
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in CONTRACTS.glob("*.json"))
    assert (copied / f"{LEGACY_PIN}.json").read_bytes() == (CONTRACTS / f"{LEGACY_PIN}.json").read_bytes()


def test_the_contracts_ship_with_the_package() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert '"factory.toolchains" = ["contracts/*.json"]' in text


def _lone_safetensors(folder: Path) -> Path:
    from tests.support.tiny_rwkv import tiny_rwkv_v5_v6_files

    folder.mkdir(parents=True)
    for name, content in tiny_rwkv_v5_v6_files(5).items():
        (folder / name).write_bytes(content)
    return folder


def _convert_argv(source: Path, out: Path) -> list[str]:
    return [str(source), "--quantization", "q4f16_1", "--model-type", "rwkv5", "--device", "cpu",
            "--source", str(source), "--source-format", "huggingface-safetensor", "--output", str(out)]  # fmt: skip


def test_the_current_standin_indexes_a_lone_safetensors_in_the_source_as_upstream_does(
    standin: dict[str, ModuleType], tmp_path: Path
) -> None:
    contract = standin["_contract"].load(CURRENT_PIN)
    assert contract["source_weights"]["writes_index_source"] == "python/mlc_llm/support/auto_weight.py:151-160"
    source = _lone_safetensors(tmp_path / "model")
    standin["__main__"]._convert_weight(contract, _convert_argv(source, tmp_path / "out"))
    written = json.loads((source / "model.safetensors.index.json").read_text())
    assert set(written["weight_map"].values()) == {"model.safetensors"} and written["weight_map"]


def test_the_current_standin_fails_on_a_read_only_source_unless_fetch_made_the_index(
    standin: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory.cells.fetch import index_single_safetensors

    contract = standin["_contract"].load(CURRENT_PIN)
    source = _lone_safetensors(tmp_path / "model")
    real_open = Path.open

    def read_only(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        # The step sees the model through a read-only mount (EROFS); tests may run as root,
        # for whom permission bits do not stop a write, so the mount is modelled here.
        if self.parent == source and any(flag in mode for flag in "wax+"):
            raise OSError(30, "Read-only file system", str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", read_only)
    with pytest.raises(SystemExit) as info:
        standin["__main__"]._convert_weight(contract, _convert_argv(source, tmp_path / "out-1"))
    assert info.value.code == 1
    assert not (source / "model.safetensors.index.json").exists()
    monkeypatch.setattr(Path, "open", real_open)
    index_single_safetensors(source)  # what `factory build` does at fetch time
    monkeypatch.setattr(Path, "open", read_only)
    standin["__main__"]._convert_weight(contract, _convert_argv(source, tmp_path / "out-2"))
    assert (tmp_path / "out-2" / "tensor-cache.json").is_file()


@pytest.mark.parametrize("manifest", ["source-built.yaml", "world.yaml"])
def test_every_toolchain_stores_float32_params_losslessly(manifest: str) -> None:
    """A pin whose convert_weight writes float32 params as bfloat16 (recorded in its
    contract; the wheel's 79d603f0 has no contract and does the same at
    interface/convert_weight.py:194) must carry the factory's patch that writes them raw."""
    loaded = load_manifest(REPO / "manifests" / manifest)
    for name, toolchain in loaded.manifest.toolchains.items():
        contract = contract_for(toolchain.mlc_llm.commit)
        if contract is not None and contract.float32_params.name == "raw":
            continue
        patches = "".join((REPO / p.path).read_text() for p in toolchain.patches if p.applies_to == "mlc-llm")
        assert '-        encode_format="f32-to-bf16",' in patches, name
        assert '+        encode_format="raw",' in patches, name
        assert "interface/convert_weight.py" in patches, name


def test_the_float32_encoding_is_recorded_for_each_pin() -> None:
    assert legacy_contract(LEGACY_PIN).float32_params.name == "raw"
    assert current_contract(CURRENT_PIN).float32_params.name == "f32-to-bf16"
