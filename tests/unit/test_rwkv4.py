"""RWKV-4 on the current flow, the factory's side: the tiny fixture, the renaming the
reference needs, and the manifest rule that the wheel toolchain's model type comes from a
toolchain patch (images/wheel/patches/rwkv4-model.patch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from safetensors.numpy import load

from factory.checkpoints.rwkv4 import HIDDEN, INTERMEDIATE, LAYERS, rwkv4_checkpoint_files
from factory.in_toolchain.reference_script import is_rwkv7, reference_name
from tests.support.run import factory

REPO = Path(__file__).resolve().parents[2]


def _reference_layout() -> set[str]:
    """The names the reference's v4 path reads (rwkv 0.8.32, RWKV.__init__ and att_one/ffn_one)."""
    names = {"emb.weight", "ln_out.weight", "ln_out.bias", "head.weight", "blocks.0.ln0.weight", "blocks.0.ln0.bias"}
    for i in range(LAYERS):
        b = f"blocks.{i}"
        names |= {f"{b}.{ln}.{p}" for ln in ("ln1", "ln2") for p in ("weight", "bias")}
        att = ["time_decay", "time_first", "time_mix_k", "time_mix_v", "time_mix_r"]
        att += [f"{m}.weight" for m in ("key", "value", "receptance", "output")]
        names |= {f"{b}.att.{n}" for n in att}
        ffn = ("time_mix_k", "time_mix_r", "key.weight", "receptance.weight", "value.weight")
        names |= {f"{b}.ffn.{n}" for n in ffn}
    return names


def test_every_tensor_of_the_fixture_gets_the_name_the_reference_reads() -> None:
    tensors = load(rwkv4_checkpoint_files()["model.safetensors"])
    assert not is_rwkv7(tensors)
    assert {reference_name(name) for name in tensors} == _reference_layout()
    # Nothing the reference's version detection reads as RWKV-5 or later (ln_x, gate, time_maa).
    assert not any(word in name for name in tensors for word in ("ln_x", "gate", "time_maa"))
    assert reference_name("rwkv.blocks.0.pre_ln.weight") == "blocks.0.ln0.weight"
    assert reference_name("rwkv.blocks.1.attention.time_mix_value") == "blocks.1.att.time_mix_v"
    assert reference_name("rwkv.blocks.1.feed_forward.time_mix_receptance") == "blocks.1.ffn.time_mix_r"


def test_the_fixture_is_made_of_exact_4_bit_groups_where_mlc_llm_quantizes() -> None:
    files = rwkv4_checkpoint_files()
    tensors = load(files["model.safetensors"])
    config = json.loads(files["config.json"])
    assert config["model_type"] == "rwkv" and config["architectures"] == ["RwkvForCausalLM"]
    assert config["hidden_size"] == config["attention_hidden_size"] == HIDDEN
    assert config["intermediate_size"] == INTERMEDIATE and config["vocab_size"] == 65536
    # Every layer rescales, so the parity gate sees the conversion's division and the model's halving.
    assert config["rescale_every"] == 1
    quantized = [n for n in tensors if n.endswith(".weight") and tensors[n].ndim == 2]
    assert len(quantized) == 2 + LAYERS * 7
    for name in quantized:
        groups = tensors[name].astype("float32").reshape(-1, 32)
        scale = np.abs(groups).max(axis=1, keepdims=True) / 7
        assert np.all(scale > 0), name
        assert np.array_equal(groups / scale, np.round(groups / scale)), name  # integers -7..7 times a scale
        # Scales are powers of two, so dividing by 2^(i // rescale_every) keeps the groups exact.
        assert np.array_equal(np.log2(scale), np.round(np.log2(scale))), name
    assert tensors["rwkv.blocks.0.attention.time_decay"].shape == (HIDDEN,)
    assert tensors["rwkv.blocks.0.attention.time_mix_key"].shape == (1, 1, HIDDEN)
    assert all(t.dtype == np.float16 for t in tensors.values())
    assert rwkv4_checkpoint_files() == files  # deterministic


def test_rwkv4_world_builds_on_the_wheel_toolchain_only_with_the_port(tmp_path: Path) -> None:
    """The release builds RWKV-4 World on the wheel toolchain, through the port, on every
    target kind the other generations have."""
    data = yaml.safe_load((REPO / "manifests" / "world.yaml").read_text())
    data["root"] = str(REPO)
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(data))
    done = factory("plan", "-m", str(path), "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    nodes = json.loads(done.stdout)["nodes"]
    cells = {n["id"].split(":", 1)[1] for n in nodes if n["kind"] == "bundle"}
    models = [m for m in data["models"] if m["type"] == "rwkv4-world"]
    assert models and all(m["hf"]["format"] == "pytorch" for m in models)  # the repos hold pytorch_model.bin only
    sizes = ("169m", "430m", "1b5", "3b", "7b")
    assert [m["name"] for m in models] == [f"rwkv-4-world-{size}" for size in sizes]
    # The cards' "fp32 for the first layer" for the 0.1B, 0.4B and 1.5B models; 3B and 7B run fp16 whole.
    assert [m.get("overrides", {}).get("float32_layers", 0) for m in models] == [1, 1, 1, 0, 0]
    for entry in models:
        model = entry["name"]
        assert entry["toolchain"] == "wheel-tvm0.26"
        assert {f"{model}/q4f32_1/{t}" for t in ("cpu-x86_64", "vulkan-x86_64", "webgpu")} <= cells
        assert {f"{model}/q4f16_1/{t}" for t in ("cpu-x86_64", "vulkan-x86_64", "cuda-sm80", "metal-arm64")} <= cells
    argv = next(n["steps"][0]["argv"] for n in nodes if n["kind"] == "convert" and models[0]["name"] in n["id"])
    assert argv[argv.index("--model-type") + 1] == "rwkv4"
    assert argv[argv.index("--source-format") + 1] == "huggingface-torch"

    patches = data["toolchains"]["wheel-tvm0.26"]["patches"]
    data["toolchains"]["wheel-tvm0.26"]["patches"] = [p for p in patches if "rwkv4" not in p.get("model_types", [])]
    path.write_text(yaml.safe_dump(data))
    done = factory("plan", "-m", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert "rwkv4-world needs the mlc-llm model type 'rwkv4'" in done.stderr
    assert "rwkv4-model.patch, model_types: [rwkv4]" in done.stderr


def test_example_model_writes_the_rwkv4_fixture(tmp_path: Path) -> None:
    done = factory("example-model", str(tmp_path / "m4"), "--version", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "m4").iterdir()} == rwkv4_checkpoint_files()


def _plan(tmp_path: Path, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(data))
    done = factory("plan", "-m", str(path), "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return {n["id"]: n for n in json.loads(done.stdout)["nodes"]}


def test_float32_layers_reaches_the_conversion_and_only_its_models_keys(tmp_path: Path) -> None:
    """models[].overrides.float32_layers: the rwkv4 port reads it from the environment of
    convert_weight and gen_config (gen_config then writes it into mlc-chat-config.json);
    it is a build input of that model alone."""
    data = yaml.safe_load((REPO / "manifests" / "world.yaml").read_text())
    data["root"] = str(REPO)
    small = next(m for m in data["models"] if m["name"] == "rwkv-4-world-1b5")
    assert small["overrides"] == {"float32_layers": 1}  # the card's "fp32 for the first layer"
    before = _plan(tmp_path, data)
    steps = before["convert:rwkv-4-world-1b5/q4f16_1@wheel-tvm0.26"]["steps"]
    assert [s["env"] for s in steps] == [{"FACTORY_FLOAT32_LAYERS": "1"}] * 2
    assert all(s["env"] == {} for s in before["convert:rwkv-4-world-3b/q4f16_1@wheel-tvm0.26"]["steps"])

    small["overrides"] = {"float32_layers": 2}
    after = _plan(tmp_path, data)
    changed = {i for i in before if before[i]["key"] != after[i]["key"]}
    assert changed and all(i.split(":", 1)[1].startswith("rwkv-4-world-1b5/") for i in changed)
    assert "convert:rwkv-4-world-1b5/q4f32_1@wheel-tvm0.26" in changed

    patches = data["toolchains"]["wheel-tvm0.26"]["patches"]
    for patch in patches:
        patch.pop("provides", None)
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(data))
    done = factory("plan", "-m", str(path), cwd=tmp_path)
    assert done.returncode == 2 and "provides float32_layers" in done.stderr, done.stderr
