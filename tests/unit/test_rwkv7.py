"""RWKV-7 (x070) on the factory's side: the tiny fixture, the renaming the reference
needs, and the manifest rule that the model type comes from a toolchain patch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import load

from factory.checkpoints.rwkv7 import HEAD_SIZE, HIDDEN, LAYERS, rwkv7_checkpoint_files
from factory.in_toolchain.reference_script import is_rwkv7, reference_name_v7
from tests.support.run import factory

REPO = Path(__file__).resolve().parents[2]


def _reference_layout() -> set[str]:
    """The names the reference's x070 loader reads (rwkv 0.8.32, RWKV_x070.__init__ and forward_one)."""
    names = {"emb.weight", "ln_out.weight", "ln_out.bias", "head.weight", "blocks.0.ln0.weight", "blocks.0.ln0.bias"}
    for i in range(LAYERS):
        b = f"blocks.{i}"
        names |= {f"{b}.{ln}.{p}" for ln in ("ln1", "ln2") for p in ("weight", "bias")}
        att = [f"x_{c}" for c in "rwkvag"] + ["w0", "w1", "w2", "a0", "a1", "a2", "g1", "g2", "k_k", "k_a", "r_k"]
        att += ["receptance.weight", "key.weight", "value.weight", "output.weight", "ln_x.weight", "ln_x.bias"]
        if i > 0:  # layer 0's v0/v1/v2 are replaced by empty tensors on load
            att += ["v0", "v1", "v2"]
        names |= {f"{b}.att.{n}" for n in att}
        names |= {f"{b}.ffn.{n}" for n in ("x_k", "key.weight", "value.weight")}
    return names


def test_every_tensor_of_the_fixture_gets_the_name_the_reference_reads() -> None:
    tensors = load(rwkv7_checkpoint_files()["model.safetensors"])
    assert is_rwkv7(tensors)
    renamed = {name: reference_name_v7(name) for name in tensors}
    assert {ref for ref, _ in renamed.values()} == _reference_layout()
    # Only the LoRA matrices are transposed (Linear weights are out x in; the reference multiplies x @ W1 @ W2).
    transposed = sorted(name for name, (_, t) in renamed.items() if t)
    assert transposed and all(".lora.0.weight" in n or ".lora.2.weight" in n for n in transposed)
    assert reference_name_v7("model.layers.1.attn.w_lora.lora.2.bias") == ("blocks.1.att.w0", False)
    assert reference_name_v7("model.layers.0.attn.g_norm.weight") == ("blocks.0.att.ln_x.weight", False)
    assert reference_name_v7("model.layers.1.attn.o_proj.weight") == ("blocks.1.att.output.weight", False)
    assert not is_rwkv7({"rwkv.blocks.0.attention.key.weight": None})


def test_the_fixture_is_made_of_exact_4_bit_groups_where_mlc_llm_quantizes() -> None:
    files = rwkv7_checkpoint_files()
    tensors = load(files["model.safetensors"])
    config = json.loads(files["config.json"])
    assert config["model_type"] == "rwkv7" and config["hidden_size"] == HIDDEN and config["head_dim"] == HEAD_SIZE
    assert config["num_heads"] == HIDDEN // HEAD_SIZE == 2  # more than one head
    quantized = [n for n in tensors if n.endswith(("_proj.weight", "ffn.key.weight", "ffn.value.weight"))]
    quantized += ["model.embeddings.weight", "lm_head.weight"]
    assert len(quantized) == 2 + LAYERS * 6
    for name in quantized:
        groups = tensors[name].astype("float32").reshape(-1, 32)
        scale = np.abs(groups).max(axis=1, keepdims=True) / 7
        assert np.all(scale > 0), name
        assert np.array_equal(groups / scale, np.round(groups / scale)), name  # integers -7..7 times a scale
    # The LoRA ranks are above 1 (the reference squeezes a rank of 1 away) and the layer 0 has no value LoRA.
    assert tensors["model.layers.1.attn.v_lora.lora.0.weight"].shape[0] > 1
    assert not any(n.startswith("model.layers.0.attn.v_lora") for n in tensors)
    assert rwkv7_checkpoint_files() == files  # deterministic


def test_an_rwkv7_model_needs_a_toolchain_patch_that_adds_the_model_type(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "manifests" / "world.yaml").read_text())
    data["root"] = str(REPO)
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(data))
    done = factory("plan", "-m", str(path), "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cells = {n["id"].split(":", 1)[1] for n in json.loads(done.stdout)["nodes"] if n["kind"] == "bundle"}
    for model in ("rwkv-7-world-1b5", "rwkv-7-world-2b9"):
        gpus = ("vulkan-x86_64", "cuda-sm80", "cuda-sm90", "metal-arm64")
        for quant in ("q0f16", "q4f16_1"):
            assert {f"{model}/{quant}/{t}" for t in gpus} <= cells
        for quant in ("q4f16_1", "q4f32_1"):
            assert {f"{model}/{quant}/{t}" for t in ("cpu-x86_64", "cpu-x86_64-v3", "webgpu")} <= cells

    patches = data["toolchains"]["wheel-tvm0.26"]["patches"]
    data["toolchains"]["wheel-tvm0.26"]["patches"] = [p for p in patches if "model_types" not in p]
    path.write_text(yaml.safe_dump(data))
    done = factory("plan", "-m", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert "rwkv7-world needs the mlc-llm model type 'rwkv7'" in done.stderr
    assert "rwkv7-model.patch, model_types: [rwkv7]" in done.stderr


def test_example_model_writes_the_rwkv7_fixture(tmp_path: Path) -> None:
    done = factory("example-model", str(tmp_path / "m7"), "--version", "7", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = rwkv7_checkpoint_files()
    assert {p.name: p.read_bytes() for p in (tmp_path / "m7").iterdir()} == files
