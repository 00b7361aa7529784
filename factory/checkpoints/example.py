"""A tiny RWKV World checkpoint made on demand (`factory example-model DIR`): the kind the
tests build, so a first real build takes minutes and nothing large is committed.

It is a real model in the Hugging Face layout the RWKV organisation publishes, with
random weights and the upstream RWKV World vocab size: it converts, compiles, runs and
matches the `rwkv` reference like a released model, and says nothing sensible.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from factory.checkpoints.groups import exact_groups
from factory.checkpoints.rwkv4 import rwkv4_checkpoint_files
from factory.checkpoints.rwkv7 import rwkv7_checkpoint_files
from factory.errors import InputError, Problem

VOCAB = 65536


@dataclass(frozen=True)
class Shape:
    """An RWKV-5/6 checkpoint's size. Weight scales follow the width (1/sqrt(fan-in),
    relative to the tiny shape), so any shape keeps the tiny one's peaked, finite logits."""

    hidden: int = 64
    layers: int = 2
    intermediate: int = 224


TINY = Shape()
RWKV6_1B6 = Shape(hidden=2048, layers=24, intermediate=7168)
"""RWKV-6 World 1B6 (RWKV/v6-Finch-1B6-HF): 24 layers, 2048 wide, 32 heads of 64."""


# RWKV-5 (Eagle, model_version 5_2) and RWKV-6 (Finch, 6_0) in the Hugging Face layout
# of RWKV/rwkv-5-world-* and RWKV/v6-Finch-*-HF: what mlc-llm's rwkv5/rwkv6 loaders
# read (their parameter names with `model.` spelled `rwkv.`). Heads of 64.
HEAD_SIZE = 64
V6_MIX_RANK, V6_DECAY_RANK = 32, 64
RECEPTANCE_STD = 0.2 / 64
LORA_STD = 0.15


def checkpoint_files(
    version: int, seed: int = 0, poison_nan: bool = False, overflow: bool = False, shape: Shape = TINY
) -> dict[str, bytes]:
    """{filename: content} of a tiny random RWKV-5 (`version=5`) or RWKV-6 checkpoint in fp16.

    Weights are scaled so the logits are peaked (a top token stands out), which keeps
    numerical comparisons of the compiled model meaningful. Every matrix mlc-llm
    quantizes is made of 4-bit group values (integers -7..7 times a power-of-two scale
    per group of 32, each group reaching 7), so q4 group quantization keeps it exactly
    and a parity check sees the compiled code, not the rounding. `overflow` keeps every
    weight finite but makes the output head so large that fp16 logits overflow to
    Inf at run time: only running the model shows it."""
    from safetensors.numpy import save

    tensors, config = checkpoint_tensors(version, seed, poison_nan=poison_nan, overflow=overflow, shape=shape)
    return {
        "config.json": json.dumps(config, indent=2).encode(),
        "model.safetensors": save(tensors),
        "README.md": f"Tiny random RWKV-{version} World checkpoint made by `factory example-model`.\n".encode(),
    }


def write_checkpoint(folder: Path, version: int, shape: Shape, seed: int = 0) -> list[Path]:
    """The same checkpoint at any shape, written straight to `folder` (a 1.6B one is 3.2 GB:
    never held as bytes). Returns the files written."""
    from safetensors.numpy import save_file

    tensors, config = checkpoint_tensors(version, seed, shape=shape)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(folder / "model.safetensors"))
    return [folder / "config.json", folder / "model.safetensors"]


def checkpoint_tensors(
    version: int, seed: int = 0, *, poison_nan: bool = False, overflow: bool = False, shape: Shape = TINY
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """The fp16 tensors and config.json of `checkpoint_files`."""
    if version not in (5, 6):
        raise ValueError(f"version must be 5 or 6, not {version}")
    rng = np.random.default_rng(seed + version)
    hidden, inner = shape.hidden, shape.intermediate
    heads = hidden // HEAD_SIZE
    # Fan-in scaling: exactly 1.0 at the tiny shape, so its bytes never change.
    wide, wide_inner = float(np.sqrt(TINY.hidden / hidden)), float(np.sqrt(TINY.intermediate / inner))

    def rand(*dims: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(dims) * scale).astype("float32")

    def mix(*dims: int) -> np.ndarray:
        return rng.uniform(0.0, 1.0, dims).astype("float32")

    grouped = functools.partial(exact_groups, rng)

    tensors = {"rwkv.embeddings.weight": grouped(VOCAB, hidden, 1.0)}
    for i in range(shape.layers):
        b = f"rwkv.blocks.{i}"
        lns = ("pre_ln", "ln1", "ln2") if i == 0 else ("ln1", "ln2")
        for ln in lns:
            tensors[f"{b}.{ln}.weight"] = 1.0 + rand(hidden, scale=0.1)
            tensors[f"{b}.{ln}.bias"] = rand(hidden, scale=0.1)
        a = f"{b}.attention"
        if version == 5:
            tensors[f"{a}.time_decay"] = rand(heads, HEAD_SIZE, scale=0.5) - 1.0
            for name in ("gate", "key", "value", "receptance"):
                tensors[f"{a}.time_mix_{name}"] = mix(1, 1, hidden)
        else:
            for name in ("x", "w", "k", "v", "r", "g"):
                tensors[f"{a}.time_maa_{name}"] = mix(1, 1, hidden)
            tensors[f"{a}.time_maa_w1"] = rand(hidden, V6_MIX_RANK * 5, scale=LORA_STD * wide)
            tensors[f"{a}.time_maa_w2"] = rand(5, V6_MIX_RANK, hidden, scale=LORA_STD)
            tensors[f"{a}.time_decay_w1"] = rand(hidden, V6_DECAY_RANK, scale=LORA_STD * wide)
            tensors[f"{a}.time_decay_w2"] = rand(V6_DECAY_RANK, hidden, scale=LORA_STD)
            tensors[f"{a}.time_decay"] = rand(1, 1, hidden, scale=0.5) - 1.0
        tensors[f"{a}.time_faaaa"] = rand(heads, HEAD_SIZE, scale=0.5)
        for name in ("key", "value", "gate", "output"):
            tensors[f"{a}.{name}.weight"] = grouped(hidden, hidden, 0.2 * wide)
        # A quiet receptance keeps each head's wkv output small, so ln_x's group norm
        # depends on its eps (the reference's 64e-5 against a default 1e-5).
        tensors[f"{a}.receptance.weight"] = grouped(hidden, hidden, RECEPTANCE_STD * wide)
        tensors[f"{a}.ln_x.weight"] = 1.0 + rand(hidden, scale=0.1)
        tensors[f"{a}.ln_x.bias"] = rand(hidden, scale=0.1)
        f = f"{b}.feed_forward"
        prefix = "time_mix" if version == 5 else "time_maa"
        tensors[f"{f}.{prefix}_key" if version == 5 else f"{f}.{prefix}_k"] = mix(1, 1, hidden)
        tensors[f"{f}.{prefix}_receptance" if version == 5 else f"{f}.{prefix}_r"] = mix(1, 1, hidden)
        tensors[f"{f}.key.weight"] = grouped(inner, hidden, 0.2 * wide)
        tensors[f"{f}.receptance.weight"] = grouped(hidden, hidden, 0.2 * wide)
        tensors[f"{f}.value.weight"] = grouped(hidden, inner, 0.2 * wide_inner)
    tensors["rwkv.ln_out.weight"] = 1.0 + rand(hidden, scale=0.1)
    tensors["rwkv.ln_out.bias"] = rand(hidden, scale=0.1)
    tensors["head.weight"] = grouped(VOCAB, hidden, 0.5 * wide)
    if overflow:
        tensors["head.weight"] = np.sign(tensors["head.weight"]) * np.float32(60000.0)
    if poison_nan:
        tensors["rwkv.blocks.0.attention.key.weight"][3, 5] = np.nan
    config = {
        "architectures": [f"Rwkv{version}ForCausalLM"],
        "model_type": f"rwkv{version}",
        "model_version": "5_2" if version == 5 else "6_0",
        "vocab_size": VOCAB,
        "context_length": 4096,
        "hidden_size": hidden,
        "num_hidden_layers": shape.layers,
        "attention_hidden_size": hidden,
        "head_size": HEAD_SIZE,
        "num_attention_heads": heads,
        "intermediate_size": inner,
        "layer_norm_epsilon": 1e-5,
        "rescale_every": 6,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "tie_word_embeddings": False,
        "use_cache": True,
    }
    # One dtype for the whole file, as the HF repos have; the loader casts per parameter.
    # In place, one tensor at a time: a 1.6B checkpoint's fp32 copy alone is 6.4 GB.
    for name in list(tensors):
        tensors[name] = tensors.pop(name).astype("float16")
    return tensors, config


def example_files(version: int, seed: int = 0) -> dict[str, bytes]:
    """{filename: content} of the tiny checkpoint of RWKV generation `version` (4 to 7)."""
    if version == 4:
        return rwkv4_checkpoint_files(seed)
    if version == 7:
        return rwkv7_checkpoint_files(seed)
    return checkpoint_files(version, seed=seed)


@dataclass(frozen=True)
class ExampleModel:
    folder: Path
    version: int
    written: bool
    """False when the folder already held exactly this checkpoint."""
    files: tuple[tuple[str, int], ...]
    """(name, bytes) of each file."""


def write_example_model(folder: Path, version: int = 6, seed: int = 0) -> ExampleModel:
    """Write the checkpoint into `folder`, all of it or nothing: the files are made in a
    sibling temporary folder that is renamed into place. A folder that already holds
    exactly these files is left as it is (the generator is deterministic), so the
    README's first command can be run again; one holding anything else is refused."""
    files = example_files(version, seed)
    listing = tuple((name, len(data)) for name, data in sorted(files.items()))
    if folder.exists():
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
        if present == sorted(files) and all((folder / n).read_bytes() == d for n, d in files.items()):
            return ExampleModel(folder=folder, version=version, written=False, files=listing)
        if present != []:
            raise InputError(
                [Problem(file=str(folder), field="DIR",
                         message="exists and is not an empty folder or this example model",
                         fix="name a new folder, or remove this one first")]
            )  # fmt: skip
        folder.rmdir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users and containers
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExampleModel(folder=folder, version=version, written=True, files=listing)
