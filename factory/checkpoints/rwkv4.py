"""A tiny random RWKV-4 checkpoint in transformers' `RwkvForCausalLM` layout, the one the
RWKV organisation's `RWKV/rwkv-4-world-*` repositories use (`model_type: rwkv`), with
the upstream RWKV World vocab size.

Like the RWKV-5/6/7 fixtures, every matrix mlc-llm quantizes (the time and channel
mixes' projections, the embedding and the head) is made of 4-bit groups, so q4 group
quantization keeps it exactly and parity sees the compiled code, not the rounding. The
decay, bonus, token-shift mixes and norms are plain random fp16 values.

`rescale_every` is 1, not the released models' 6: with two layers, 6 would never
rescale, and 1 makes the conversion divide layer 1's output and channel-mix value
weights by 2 and the model halve x after each layer, which the parity gate then checks
(the float32 reference does not rescale, and needs not: it is neutral but for the
layer norms' epsilon).

`fp16_overflow` gives layer 0 what makes the small RWKV-4 World models fail in fp16: a
channel mix whose squared ReLU passes float16's largest value (65504) while its output,
scaled down by tiny value weights, stays moderate. In float32 every logit is finite; with
layer 0 in float16 they are NaN, which `float32_layers: 1` avoids.
"""

from __future__ import annotations

import json

import numpy as np

from factory.checkpoints.groups import exact_groups

VOCAB, HIDDEN, LAYERS = 65536, 64, 2
INTERMEDIATE = 4 * HIDDEN
RESCALE_EVERY = 1
# fp16_overflow: layer 0's channel-mix keys reach about 400 (squares of 1.6e5), its value
# weights are multiples of 2^-17 (float16 subnormals, held exactly), so the mix adds ~10.
OVERFLOW_KEY_STD, OVERFLOW_VALUE_STD = 32.0, 1e-5


def rwkv4_tensors(seed: int = 0, fp16_overflow: bool = False) -> dict[str, np.ndarray]:
    """The checkpoint's tensors (float32 values that fp16 holds exactly where quantized)
    under their Hugging Face names."""
    rng = np.random.default_rng(seed + 4)

    def rand(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype("float32")

    def mix(*shape: int) -> np.ndarray:
        return rng.uniform(0.0, 1.0, shape).astype("float32")

    tensors = {"rwkv.embeddings.weight": exact_groups(rng, VOCAB, HIDDEN, 1.0)}
    for i in range(LAYERS):
        block = f"rwkv.blocks.{i}"
        for norm in ("pre_ln", "ln1", "ln2") if i == 0 else ("ln1", "ln2"):
            tensors[f"{block}.{norm}.weight"] = 1.0 + rand(HIDDEN, scale=0.1)
            tensors[f"{block}.{norm}.bias"] = rand(HIDDEN, scale=0.1)
        att = f"{block}.attention"
        # Decays -exp(d) between about -0.1 and -1.6: the state keeps several tokens.
        tensors[f"{att}.time_decay"] = rand(HIDDEN, scale=0.7) - 0.8
        tensors[f"{att}.time_first"] = rand(HIDDEN, scale=0.5)
        for name in ("key", "value", "receptance"):
            tensors[f"{att}.time_mix_{name}"] = mix(1, 1, HIDDEN)
        for name in ("key", "value", "receptance", "output"):
            tensors[f"{att}.{name}.weight"] = exact_groups(rng, HIDDEN, HIDDEN, 0.2)
        ffn = f"{block}.feed_forward"
        tensors[f"{ffn}.time_mix_key"] = mix(1, 1, HIDDEN)
        tensors[f"{ffn}.time_mix_receptance"] = mix(1, 1, HIDDEN)
        tensors[f"{ffn}.key.weight"] = exact_groups(rng, INTERMEDIATE, HIDDEN, 0.2)
        tensors[f"{ffn}.receptance.weight"] = exact_groups(rng, HIDDEN, HIDDEN, 0.2)
        tensors[f"{ffn}.value.weight"] = exact_groups(rng, HIDDEN, INTERMEDIATE, 0.1)
        if fp16_overflow and i == 0:
            tensors[f"{ffn}.key.weight"] = exact_groups(rng, INTERMEDIATE, HIDDEN, OVERFLOW_KEY_STD)
            tensors[f"{ffn}.value.weight"] = exact_groups(rng, HIDDEN, INTERMEDIATE, OVERFLOW_VALUE_STD)
    tensors["rwkv.ln_out.weight"] = 1.0 + rand(HIDDEN, scale=0.1)
    tensors["rwkv.ln_out.bias"] = rand(HIDDEN, scale=0.1)
    tensors["head.weight"] = exact_groups(rng, VOCAB, HIDDEN, 0.5)
    return tensors


def rwkv4_config() -> dict[str, object]:
    """config.json as transformers writes it for such a model (RwkvConfig)."""
    return {
        "architectures": ["RwkvForCausalLM"],
        "model_type": "rwkv",
        "vocab_size": VOCAB,
        "context_length": 1024,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "attention_hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "layer_norm_epsilon": 1e-5,
        "rescale_every": RESCALE_EVERY,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "tie_word_embeddings": False,
        "use_cache": True,
    }


def rwkv4_checkpoint_files(seed: int = 0, fp16_overflow: bool = False) -> dict[str, bytes]:
    """{filename: content}: config.json and model.safetensors (fp16)."""
    from safetensors.numpy import save

    half = {name: value.astype("float16") for name, value in rwkv4_tensors(seed, fp16_overflow).items()}
    return {
        "config.json": json.dumps(rwkv4_config(), indent=2).encode(),
        "model.safetensors": save(half),
        "README.md": b"Tiny random RWKV-4 World checkpoint made by `factory example-model --version 4`.\n",
    }
