"""A tiny random RWKV-4 checkpoint in Hugging Face format, written with safetensors.

Same tensor names and config keys as transformers' RwkvForCausalLM
(RwkvConfig(vocab_size=65536, hidden_size=64, num_hidden_layers=2,
attention_hidden_size=64, intermediate_size=256)), without needing torch: the legacy
flow's stand-in tests build it. The exact-group fixtures every generation's real
builds use (RWKV-4 included) come from the package, as `factory example-model` writes
them: `tiny_checkpoint_files`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from factory.checkpoints.example import checkpoint_files, example_files

VOCAB, HIDDEN, LAYERS, INTERMEDIATE = 65536, 64, 2, 256


def tiny_rwkv_files(seed: int = 0, poison_nan: bool = False) -> dict[str, bytes]:
    """{filename: content} of the checkpoint; `poison_nan` puts NaN into one weight."""
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype("float32")

    tensors = {"rwkv.embeddings.weight": rand(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        b = f"rwkv.blocks.{i}"
        if i == 0:
            tensors[f"{b}.pre_ln.weight"] = np.ones(HIDDEN, "float32")
            tensors[f"{b}.pre_ln.bias"] = np.zeros(HIDDEN, "float32")
        for ln in ("ln1", "ln2"):
            tensors[f"{b}.{ln}.weight"] = np.ones(HIDDEN, "float32")
            tensors[f"{b}.{ln}.bias"] = np.zeros(HIDDEN, "float32")
        tensors[f"{b}.attention.time_decay"] = rand(HIDDEN)
        tensors[f"{b}.attention.time_first"] = rand(HIDDEN)
        for mix in ("key", "value", "receptance"):
            tensors[f"{b}.attention.time_mix_{mix}"] = rand(1, 1, HIDDEN)
            tensors[f"{b}.attention.{mix}.weight"] = rand(HIDDEN, HIDDEN)
        tensors[f"{b}.attention.output.weight"] = rand(HIDDEN, HIDDEN)
        tensors[f"{b}.feed_forward.time_mix_key"] = rand(1, 1, HIDDEN)
        tensors[f"{b}.feed_forward.time_mix_receptance"] = rand(1, 1, HIDDEN)
        tensors[f"{b}.feed_forward.key.weight"] = rand(INTERMEDIATE, HIDDEN)
        tensors[f"{b}.feed_forward.receptance.weight"] = rand(HIDDEN, HIDDEN)
        tensors[f"{b}.feed_forward.value.weight"] = rand(HIDDEN, INTERMEDIATE)
    tensors["rwkv.ln_out.weight"] = np.ones(HIDDEN, "float32")
    tensors["rwkv.ln_out.bias"] = np.zeros(HIDDEN, "float32")
    tensors["head.weight"] = rand(VOCAB, HIDDEN)
    if poison_nan:
        tensors["rwkv.blocks.0.attention.key.weight"][3, 5] = np.nan
    config = {
        "architectures": ["RwkvForCausalLM"],
        "model_type": "rwkv",
        "vocab_size": VOCAB,
        "context_length": 1024,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "attention_hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "rescale_every": 6,
        "tie_word_embeddings": False,
        "use_cache": True,
    }
    return {
        "config.json": json.dumps(config, indent=2).encode(),
        "model.safetensors": save(tensors),
        "README.md": b"Tiny random RWKV-4 World checkpoint for the factory's tests.\n",
    }


def write_tiny_rwkv(folder: Path, **kwargs: bool | int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in tiny_rwkv_files(**kwargs).items():  # type: ignore[arg-type]
        (folder / name).write_bytes(data)
    return folder


# RWKV-4 to 7 come from the package: `factory example-model` writes the same checkpoints.
tiny_rwkv_v5_v6_files = checkpoint_files


def tiny_checkpoint_files(version: int) -> dict[str, bytes]:
    """The tiny checkpoint of RWKV generation `version` (4 to 7), exact 4-bit groups."""
    return example_files(version)
