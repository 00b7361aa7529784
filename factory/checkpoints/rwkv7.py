"""A tiny random RWKV-7 (x070) checkpoint in the Hugging Face layout of the RWKV
organisation's `RWKV7-Goose-World3-*-HF` repositories (flash-linear-attention,
`model_type: rwkv7`), with the upstream RWKV World vocab size.

Like the RWKV-5/6 fixtures, every matrix mlc-llm quantizes (the four projections,
the channel mix, the embedding and the head) is made of 4-bit groups, so q4 group
quantization keeps it exactly and parity sees the compiled code, not the rounding.
The low-rank factors, mixes and vectors are plain random fp16 values: they are not
quantized.
"""

from __future__ import annotations

import json

import numpy as np

from factory.checkpoints.groups import exact_groups

# Two heads of 32, so the per-head code sees more than one head (released models use heads
# of 64), at the RWKV-5/6 fixtures' width: 17 MB.
VOCAB, HIDDEN, LAYERS, HEAD_SIZE = 65536, 64, 2, 32
INTERMEDIATE = 4 * HIDDEN
# Ranks above 1 (the reference squeezes a rank of 1 away on load).
DECAY_RANK, A_RANK, V_RANK, GATE_RANK = 32, 32, 32, 64
LORA_STD = 0.15
# The decay path is the least sensitive part of a random RWKV-7 (a decay moves between
# exp(-0.61) and 1 only): a wide decay LoRA and w0, and a visible head-norm bias, keep every
# tensor's effect on the reference far above the exact bound (weakest measured: layer 1's
# w_lora.lora.2.weight, KL mean 9.4e-5 under 25% noise, against a bound of 1e-8).
DECAY_LORA_STD, W0_STD, W0_SHIFT, A0_SHIFT, LN_X_BIAS_STD = 0.5, 2.5, 0.0, 0.0, 0.5


def rwkv7_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """The checkpoint's tensors (float32 values that fp16 holds exactly where quantized)
    under their Hugging Face names."""
    rng = np.random.default_rng(seed + 7)
    heads = HIDDEN // HEAD_SIZE

    def rand(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype("float32")

    def mix(*shape: int) -> np.ndarray:
        return rng.uniform(0.0, 1.0, shape).astype("float32")

    tensors = {"model.embeddings.weight": exact_groups(rng, VOCAB, HIDDEN, 1.0)}
    for i in range(LAYERS):
        layer = f"model.layers.{i}"
        for norm in ("pre_norm", "attn_norm", "ffn_norm") if i == 0 else ("attn_norm", "ffn_norm"):
            tensors[f"{layer}.{norm}.weight"] = 1.0 + rand(HIDDEN, scale=0.1)
            tensors[f"{layer}.{norm}.bias"] = rand(HIDDEN, scale=0.1)
        attn = f"{layer}.attn"
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            tensors[f"{attn}.{name}"] = mix(1, 1, HIDDEN)
        tensors[f"{attn}.k_k"] = rng.uniform(0.5, 1.5, HIDDEN).astype("float32")
        tensors[f"{attn}.k_a"] = mix(HIDDEN)
        tensors[f"{attn}.r_k"] = rand(heads, HEAD_SIZE, scale=0.5)
        lora = [("w", DECAY_RANK, True), ("a", A_RANK, True), ("g", GATE_RANK, False)]
        if i > 0:  # layer 0's value is the v-first: it has no value LoRA
            lora.append(("v", V_RANK, True))
        for kind, rank, bias in lora:
            std = DECAY_LORA_STD if kind == "w" else LORA_STD
            tensors[f"{attn}.{kind}_lora.lora.0.weight"] = rand(rank, HIDDEN, scale=std)
            tensors[f"{attn}.{kind}_lora.lora.2.weight"] = rand(HIDDEN, rank, scale=std)
            if bias:
                shift = {"w": W0_SHIFT, "a": A0_SHIFT}.get(kind, 0.0)
                spread = W0_STD if kind == "w" else 0.5
                tensors[f"{attn}.{kind}_lora.lora.2.bias"] = rand(HIDDEN, scale=spread) + shift
        for name in ("r_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"{attn}.{name}.weight"] = exact_groups(rng, HIDDEN, HIDDEN, 0.2)
        tensors[f"{attn}.g_norm.weight"] = 1.0 + rand(HIDDEN, scale=0.1)
        tensors[f"{attn}.g_norm.bias"] = rand(HIDDEN, scale=LN_X_BIAS_STD)
        ffn = f"{layer}.ffn"
        tensors[f"{ffn}.x_k"] = mix(1, 1, HIDDEN)
        tensors[f"{ffn}.key.weight"] = exact_groups(rng, INTERMEDIATE, HIDDEN, 0.2)
        tensors[f"{ffn}.value.weight"] = exact_groups(rng, HIDDEN, INTERMEDIATE, 0.2)
    tensors["model.norm.weight"] = 1.0 + rand(HIDDEN, scale=0.1)
    tensors["model.norm.bias"] = rand(HIDDEN, scale=0.1)
    tensors["lm_head.weight"] = exact_groups(rng, VOCAB, HIDDEN, 0.5)
    return tensors


def rwkv7_config() -> dict[str, object]:
    """config.json as flash-linear-attention writes it for such a model."""
    return {
        "architectures": ["RWKV7ForCausalLM"],
        "model_type": "rwkv7",
        "attn_mode": "chunk",
        "hidden_size": HIDDEN,
        "head_dim": HEAD_SIZE,
        "num_heads": HIDDEN // HEAD_SIZE,
        "num_hidden_layers": LAYERS,
        "hidden_ratio": INTERMEDIATE / HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "decay_low_rank_dim": DECAY_RANK,
        "a_low_rank_dim": A_RANK,
        "v_low_rank_dim": V_RANK,
        "gate_low_rank_dim": GATE_RANK,
        "hidden_act": "sqrelu",
        "norm_first": True,
        "norm_bias": True,
        "norm_eps": 1e-5,
        "vocab_size": VOCAB,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "tie_word_embeddings": False,
        "use_cache": True,
    }


def rwkv7_checkpoint_files(seed: int = 0) -> dict[str, bytes]:
    """{filename: content}: config.json and model.safetensors (fp16), as the HF repos have."""
    from safetensors.numpy import save

    half = {name: value.astype("float16") for name, value in rwkv7_tensors(seed).items()}
    return {
        "config.json": json.dumps(rwkv7_config(), indent=2).encode(),
        "model.safetensors": save(half),
        "README.md": b"Tiny random RWKV-7 World checkpoint made by `factory example-model --version 7`.\n",
    }
