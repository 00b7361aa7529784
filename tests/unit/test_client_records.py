"""What MLC users' clients read: the exported weight repo and its model card, the WebLLM
and mlc-package records, and the runtime in words (with `pull --runtime`'s check)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from factory.clients import client_records as records
from factory.clients.mlc_repo import export_bundle
from factory.devices.runtime import RuntimeSpec, runtime_words
from factory.errors import FactoryError, UsageError
from factory.manifest.model import BuildOptions, Model, Target
from factory.store.bundle_folder import read_manifest
from factory.toolchains import FLOWS
from tests.support.bundles import make_bundle

# The fields WebLLM's ModelRecord and ModelIntegrity, and mlc-package-config.json's
# model_list entries, define (../shared/FACTS.md, "How MLC users get models today").
WEBLLM_FIELDS = {
    "model", "model_id", "model_lib", "overrides", "vram_required_MB", "low_resource_required",
    "buffer_size_required_bytes", "required_features", "model_type", "integrity",
}  # fmt: skip
INTEGRITY_FIELDS = {"config", "model_lib", "tokenizer", "onFailure"}
PACKAGE_FIELDS = {"model", "model_id", "estimated_vram_bytes", "bundle_weight", "model_lib", "overrides"}
LIBRARY_GATE = {"status": "passed", "params_bytes": 700_000_000, "temp_bytes": 40_000_000, "state_bytes": 13_000_000}
COMPAT = {
    "flow": "current", "device": "webgpu", "mlc_llm": "79d603f085f50500e9509fa01785ffa7ecfaaa93",
    "tvm": "apache-tvm==0.26.0", "params_index": "tensor-cache.json", "patches": "c55f967f" + "0" * 56,
}  # fmt: skip


def _bundle(tmp_path: Path, quant: str, target: str, suffix: str) -> Path:
    gates: dict[str, object] = {"library": LIBRARY_GATE, "parity": {"status": "passed", "kl_mean": 1e-11, "top1": 1.0}}
    return make_bundle(tmp_path, quant=quant, target=target, suffix=suffix, gates=gates)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sri_strings_are_base64_of_the_sha256() -> None:
    assert records.sri(hashlib.sha256(b"").hexdigest()) == "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


@pytest.mark.parametrize(("quant", "features"), [("q4f16_1", ["shader-f16"]), ("q4f32_1", [])])
def test_a_webgpu_bundle_gets_a_webllm_record_with_exactly_its_fields(
    tmp_path: Path, quant: str, features: list[str]
) -> None:
    bundle = _bundle(tmp_path, quant, "webgpu", "wasm")
    manifest = read_manifest(bundle)
    made = records.client_records(manifest, org="my-org", libs_url="https://libs.example/v1/")
    assert set(made) == {"hf_repo", "webllm", "web_runtime"}
    # The catalog's run page loads the JS runtime built with the .wasm from beside it.
    assert made["web_runtime"] == f"https://libs.example/v1/rwkv-5-world-tiny/rwkv-5-world-tiny-{quant}-webgpu.tvmjs.js"
    assert [f.role for f in manifest.files if f.path.endswith(".tvmjs.js")] == ["web-runtime"]
    record: dict[str, Any] = made["webllm"]
    assert set(record) <= WEBLLM_FIELDS and set(record["integrity"]) <= INTEGRITY_FIELDS
    assert record["model"] == f"https://huggingface.co/my-org/rwkv-5-world-tiny-{quant}-MLC"
    assert record["model_id"] == f"rwkv-5-world-tiny-{quant}-MLC"
    assert record["model_lib"] == f"https://libs.example/v1/rwkv-5-world-tiny/rwkv-5-world-tiny-{quant}-webgpu.wasm"
    assert record["required_features"] == features
    # WebLLM reads the window sizes from mlc-chat-config.json (4096 for RWKV); a -1 context
    # window in the record's overrides makes it refuse to load (0.2.86).
    assert "overrides" not in record
    assert record["vram_required_MB"] == round((700_000_000 + 40_000_000 + 13_000_000) / (1 << 20), 1)
    assert record["low_resource_required"] is True
    integrity = record["integrity"]
    library = bundle / f"rwkv-5-world-tiny-{quant}-webgpu.wasm"
    assert base64.b64decode(integrity["model_lib"].removeprefix("sha256-")).hex() == _sha(library)
    assert integrity["config"] == records.sri(_sha(bundle / "mlc-chat-config.json"))
    assert integrity["tokenizer"] == {"tokenizer_model": records.sri(_sha(bundle / "tokenizer_model"))}


def test_a_system_library_bundle_gets_a_package_entry_whose_prefix_the_compile_uses(tmp_path: Path) -> None:
    manifest = read_manifest(_bundle(tmp_path, "q4f16_1", "android", "tar"))
    made = records.client_records(manifest, org="my-org")
    assert set(made) == {"hf_repo", "mlc_package"}
    entry = made["mlc_package"]
    assert set(entry) <= PACKAGE_FIELDS and {"model", "model_id", "estimated_vram_bytes", "model_lib"} <= set(entry)
    assert entry["model"] == "HF://my-org/rwkv-5-world-tiny-q4f16_1-MLC"
    assert entry["estimated_vram_bytes"] == 753_000_000
    model = Model.model_validate(
        {"name": "rwkv-5-world-tiny", "hf": {"repo": "a/b"}, "type": "rwkv5-world", "toolchain": "t"}
    )
    target = Target.model_validate({"device": "android:generic", "suffix": "tar", "runner": "container", "os": "linux"})
    [step] = FLOWS["current"].compile_steps(model, "q4f16_1", "android", target, BuildOptions())
    prefix = step.argv[step.argv.index("--system-lib-prefix") + 1]
    assert prefix == entry["model_lib"] == "rwkv_5_world_tiny_q4f16_1_"


def test_other_bundles_get_only_their_repo_and_no_figure_is_made_up(tmp_path: Path) -> None:
    assert records.client_records(read_manifest(_bundle(tmp_path, "q4f16_1", "cuda-sm80", "so")), org="o") == {
        "hf_repo": "o/rwkv-5-world-tiny-q4f16_1-MLC"
    }
    bare = read_manifest(make_bundle(tmp_path / "bare", target="android", suffix="tar"))
    assert records.vram_bytes(bare) is None and records.mlc_package_entry(bare, repo_id="o/r") is None


def test_memory_figures_come_from_the_library_metadata() -> None:
    metadata = {
        "kv_state_kind": "rnn_state",
        "params": [{"shape": [65536, 8], "dtype": "uint32"}, {"shape": [64], "dtype": "float32"}],
        "memory_usage": {"prefill": 18_120_960, "decode": 297_984, "batch_prefill": 51_429_632},
    }
    config = {"model_config": {"num_hidden_layers": 2, "hidden_size": 64, "head_size": 64}}
    assert records.memory_figures(metadata, config) == {
        "params_bytes": 65536 * 8 * 4 + 64 * 4,
        "temp_bytes": 18_120_960,  # one sequence: the batch functions size for 128
        "state_bytes": 2 * (2 * 64 + 64 * 64) * 4,
    }


def test_the_runtime_in_words_and_a_runtime_that_does_not_fit() -> None:
    words = runtime_words(COMPAT)
    assert words.startswith("mlc-llm 79d603f0 (current flow: the mlc_llm package, tensor-cache.json) on TVM")
    assert "apache-tvm==0.26.0 (PyPI wheel)" in words and "device webgpu" in words
    fits = RuntimeSpec.parse(["mlc-llm=79d603f0", "tvm=0.26.0", "flow=current"])
    assert fits.misfits(COMPAT) == []
    assert RuntimeSpec.parse(["mlc_llm=bb586e51", "tvm=apache-tvm==0.27.0"]).misfits(COMPAT) == [
        f"mlc-llm: yours is bb586e51, the bundle needs {COMPAT['mlc_llm']}",
        "tvm: yours is apache-tvm==0.27.0, the bundle needs apache-tvm==0.26.0",
    ]
    assert RuntimeSpec.parse(["mlc-llm=79d6"]).misfits(COMPAT)  # too short to be a commit prefix
    for bad in ("mlc-llm", "gpu=h100", "tvm="):
        with pytest.raises(UsageError, match="KEY=VALUE"):
            RuntimeSpec.parse([bad])


def test_export_writes_the_weight_repo_and_the_library_apart(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "q4f32_1", "cpu-x86_64", "so")
    made = export_bundle(bundle, tmp_path / "out", "my-org/repo")
    repo = tmp_path / "out" / "repo"
    names = sorted(p.name for p in repo.iterdir())
    assert names == sorted([*(n for n, _, _ in made.files), "README.md"])
    assert {"mlc-chat-config.json", "tensor-cache.json", "tokenizer_model"} <= set(names)
    assert not any(n.endswith(".so") for n in names) and "factory-bundle.json" not in names
    assert made.library == tmp_path / "out" / "libs" / "rwkv-5-world-tiny" / "rwkv-5-world-tiny-q4f32_1-cpu-x86_64.so"
    assert made.library.read_bytes() == (bundle / made.library.name).read_bytes()
    card = (repo / "README.md").read_text()
    for name, size, digest in made.files:
        assert f"| {name} | {size} | `{digest}` |" in card and digest == _sha(repo / name)
    assert "mlc_llm chat HF://my-org/repo" in card and "parity: passed" in card and "build key" in card
    index = json.loads((repo / "tensor-cache.json").read_text())
    assert all((repo / shard["dataPath"]).is_file() for shard in index["records"])


def test_export_puts_a_webgpu_librarys_js_runtime_beside_it_and_a_mirror_hub_in_the_record(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "q4f32_1", "webgpu", "wasm")
    made = export_bundle(bundle, tmp_path / "out", "my-org/repo")
    libs = tmp_path / "out" / "libs" / "rwkv-5-world-tiny"
    assert sorted(p.name for p in libs.iterdir()) == [
        "rwkv-5-world-tiny-q4f32_1-webgpu.tvmjs.js", "rwkv-5-world-tiny-q4f32_1-webgpu.wasm"]  # fmt: skip
    runtime = libs / "rwkv-5-world-tiny-q4f32_1-webgpu.tvmjs.js"
    assert runtime.read_bytes() == (bundle / runtime.name).read_bytes()
    assert not any(name.endswith((".wasm", ".js")) for name, _, _ in made.files)
    record = records.client_records(read_manifest(bundle), org="my-org", hub_url="http://127.0.0.1:8000/hub/")
    assert record["webllm"]["model"] == "http://127.0.0.1:8000/hub/my-org/rwkv-5-world-tiny-q4f32_1-MLC"
    assert record["web_runtime"] == "libs/rwkv-5-world-tiny/rwkv-5-world-tiny-q4f32_1-webgpu.tvmjs.js"


def test_export_refuses_a_tampered_bundle_and_writes_nothing(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "q4f32_1", "cpu-x86_64", "so")
    config = bundle / "mlc-chat-config.json"
    config.write_text(config.read_text().replace("rwkv5", "rwkv6"))
    with pytest.raises(FactoryError, match=r"mlc-chat-config\.json"):
        export_bundle(bundle, tmp_path / "out", "my-org/repo")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="not a Hugging Face repo id"):
        export_bundle(make_bundle(tmp_path / "b"), tmp_path / "o", "no-slash")


def test_release_notes_name_each_runtime_and_carry_the_client_records(tmp_path: Path) -> None:
    from factory.clients.release import render_notes
    from factory.store.documents import ReleaseManifest

    manifest = read_manifest(_bundle(tmp_path, "q4f32_1", "webgpu", "wasm"))
    bundle = {
        "name": manifest.name, "manifest": f"bundles/{manifest.name}/1.0.0.json", "sha256": "a" * 64, "size": 10,
        "files": 3, "compatibility": COMPAT, "smoke": {"status": "not-run"},
    }  # fmt: skip
    document = {
        "schema": "factory.release/v1", "name": "r", "version": "1.0.0", "factory_version": "0",
        "created_at": "2026-12-04T00:00:00Z", "bundles": [bundle],
    }  # fmt: skip
    release = ReleaseManifest.model_validate(document)
    made = records.client_records(manifest, org="my-org")
    notes = render_notes(release, {manifest.name: made})
    assert f"- {runtime_words(COMPAT)}: `{manifest.name}`" in notes
    block = notes.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == {"webllm": made["webllm"]}


def test_the_rnn_state_size_reads_each_generations_head_size_field() -> None:
    # RWKV-5/6 name it head_size (one head of 64 here); RWKV-7 head_dim (two heads of 32).
    assert records.state_bytes({"num_hidden_layers": 2, "hidden_size": 64, "head_size": 64}) == 2 * (128 + 64 * 64) * 4
    assert (
        records.state_bytes({"num_hidden_layers": 2, "hidden_size": 64, "head_dim": 32}) == 2 * (128 + 2 * 32 * 32) * 4
    )
    assert records.state_bytes({"num_hidden_layers": 2, "hidden_size": 64}) == 0
    # RWKV-4 has no heads: per layer two token-shift vectors and the WKV's aa, bb and pp.
    assert records.state_bytes({"num_hidden_layers": 2, "hidden_size": 64}, "rwkv4") == 2 * 5 * 64 * 4
    v4 = {"num_hidden_layers": 2, "hidden_size": 64, "attention_hidden_size": 32}
    assert records.state_bytes(v4, "rwkv4") == 2 * (2 * 64 + 3 * 32) * 4
