"""Runs INSIDE a toolchain (it needs torch and the `rwkv` package), not in the factory:
the RWKV project's own reference implementation (`rwkv.model.RWKV`, PyPI `rwkv`) on the
same checkpoint a bundle was converted from, for the parity gate.

    python reference_script.py MODEL_DIR TOKENS_JSON OUT_NPY

MODEL_DIR is a Hugging Face-layout checkpoint (config.json and model.safetensors or
pytorch_model*.bin). Its tensors are renamed to the layout the reference loads
(the original RWKV `.pth` names), the reference runs the tokens one at a time in
fp32 on the CPU, and the logits after each token go to OUT_NPY as float32 [T, vocab].
Prints `FACTORY-REFERENCE {json}` with the version the reference detected.

RWKV-7 (`model_type: rwkv7`, the `model.layers.N.attn.*` names of the RWKV
organisation's -HF repositories) runs the reference's x070 class, which the package
defines only when RWKV_V7_ON=1 is set before it is imported; it has no `.version`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MARK = "FACTORY-REFERENCE "

# Hugging Face names (transformers' Rwkv and the RWKV-5/6 remote code) -> reference names.
_PART = {"attention": "att", "feed_forward": "ffn", "pre_ln": "ln0"}
_LEAF = {
    "time_mix_key": "time_mix_k",
    "time_mix_value": "time_mix_v",
    "time_mix_receptance": "time_mix_r",
    "time_mix_gate": "time_mix_g",
}


def reference_name(hf_name: str) -> str:
    """PURE: the reference layout's name for one Hugging Face tensor name."""
    if hf_name == "head.weight":
        return hf_name
    parts = hf_name.split(".")
    if parts[0] != "rwkv":
        raise ValueError(f"unexpected tensor {hf_name!r} (not under rwkv.)")
    parts = parts[1:]
    if parts[0] == "embeddings":
        return "emb." + ".".join(parts[1:])
    if parts[0] == "ln_out":
        return ".".join(parts)
    if parts[0] != "blocks" or len(parts) < 4:
        raise ValueError(f"unexpected tensor {hf_name!r}")
    block, part, rest = parts[1], parts[2], parts[3:]
    part = _PART.get(part, part)
    rest = [_LEAF.get(rest[0], rest[0]), *rest[1:]]
    return ".".join(["blocks", block, part, *rest])


# RWKV-7: Hugging Face (flash-linear-attention) names -> reference names.
_V7_TOP = {"model.embeddings.weight": "emb.weight", "lm_head.weight": "head.weight"}
_V7_PART = {"pre_norm": "ln0", "attn_norm": "ln1", "ffn_norm": "ln2", "attn": "att", "ffn": "ffn"}
_V7_ATTN = {"r_proj": "receptance", "k_proj": "key", "v_proj": "value", "o_proj": "output", "g_norm": "ln_x"}
# X_lora.lora.0.weight is X1 transposed, lora.2.weight X2 transposed, lora.2.bias X0.
_V7_LORA = {"lora.0.weight": ("1", True), "lora.2.weight": ("2", True), "lora.2.bias": ("0", False)}


def is_rwkv7(hf_names: Any) -> bool:
    return any(name.startswith("model.layers.") for name in hf_names)


def reference_name_v7(hf_name: str) -> tuple[str, bool]:
    """PURE: (the reference's name for one RWKV-7 Hugging Face tensor, whether it is transposed)."""
    if hf_name in _V7_TOP:
        return _V7_TOP[hf_name], False
    if hf_name.startswith("model.norm."):
        return "ln_out." + hf_name[len("model.norm.") :], False
    parts = hf_name.split(".")
    if parts[:2] != ["model", "layers"] or len(parts) < 5 or parts[3] not in _V7_PART:
        raise ValueError(f"unexpected RWKV-7 tensor {hf_name!r}")
    head = ["blocks", parts[2], _V7_PART[parts[3]]]
    rest = parts[4:]
    if parts[3] == "attn" and rest[0].endswith("_lora") and ".".join(rest[1:]) in _V7_LORA:
        number, transposed = _V7_LORA[".".join(rest[1:])]
        return ".".join([*head, rest[0][0] + number]), transposed
    if parts[3] == "attn":
        rest = [_V7_ATTN.get(rest[0], rest[0]), *rest[1:]]
    return ".".join(head + rest), False


def _checkpoint_shards(folder: Path) -> tuple[list[Path], bool]:
    """(the checkpoint's weight files, whether they are safetensors)."""
    single = folder / "model.safetensors"
    shards = sorted(folder.glob("model-*.safetensors")) or ([single] if single.is_file() else [])
    if shards:
        return shards, True
    shards = sorted(folder.glob("pytorch_model*.bin"))
    if not shards:
        raise SystemExit(f"{folder}: no model.safetensors or pytorch_model*.bin")
    return shards, False


def _each_hf_tensor(folder: Path) -> Iterator[tuple[str, Any]]:
    """The checkpoint's tensors one at a time, each read only when it is asked for."""
    import torch

    shards, safetensors = _checkpoint_shards(folder)
    for shard in shards:
        if safetensors:
            from safetensors import safe_open

            with safe_open(str(shard), framework="pt", device="cpu") as opened:
                names = list(opened.keys())
            for name in names:
                # Opened again for each tensor: the pages a mapping has read count as the
                # process's own memory until it is closed (a whole fp16 checkpoint's worth).
                with safe_open(str(shard), framework="pt", device="cpu") as opened:
                    tensor = opened.get_tensor(name)
                yield name, tensor
        else:
            # mmap: a pickle shard's tensors stay on disk until each is converted.
            yield from torch.load(shard, map_location="cpu", weights_only=True, mmap=True).items()


def _hf_tensors(folder: Path) -> dict[str, Any]:
    return dict(_each_hf_tensor(folder))


def _renamed(hf_name: str, tensor: Any, v7: bool) -> tuple[str, Any]:
    if not v7:
        return reference_name(hf_name), tensor
    name, transposed = reference_name_v7(hf_name)
    return name, (tensor.t().contiguous() if transposed else tensor)


def reference_tensors(hf: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face tensors under the reference's names (RWKV-7's LoRA factors transposed)."""
    v7 = is_rwkv7(hf)
    return dict(_renamed(name, tensor, v7) for name, tensor in hf.items())


def reference_weights(model_dir: str) -> dict[str, Any]:
    """The checkpoint's tensors under the reference's names, in float32, converted one at a
    time: the float32 copy is the only full copy held (an fp16 checkpoint's own bytes are
    never all in memory beside it)."""
    folder = Path(model_dir)
    shards, safetensors = _checkpoint_shards(folder)
    if safetensors:
        from safetensors import safe_open

        with safe_open(str(shards[0]), framework="pt", device="cpu") as opened:
            v7 = is_rwkv7(opened.keys())
    else:
        v7 = is_rwkv7(_hf_tensors(folder))
    return dict(_renamed(name, tensor.float(), v7) for name, tensor in _each_hf_tensor(folder))


def reference_logits(weights: dict[str, Any], tokens: list[int]) -> tuple[Any, float]:
    """(float32 [T, vocab] logits after each token, the version the reference detected).
    The caller keeps `weights`: the reference loads its own copy from a file."""
    import torch

    v7 = "blocks.0.att.k_k" in weights
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference"
        torch.save(weights, f"{path}.pth")
        return _reference_run(path, v7, tokens)


def _reference_run(path: Path, v7: bool, tokens: list[int]) -> tuple[Any, float]:
    """The reference package on a saved `.pth` (the only way it loads weights)."""
    os.environ.setdefault("RWKV_JIT_ON", "0")
    os.environ.setdefault("RWKV_CUDA_ON", "0")
    if v7:  # read once, at import: a process runs one generation only
        os.environ["RWKV_V7_ON"] = "1"
    import numpy as np
    from rwkv.model import RWKV

    model = (
        RWKV(model=str(path), strategy="cpu fp32") if v7 else RWKV(model=str(path), strategy="cpu fp32", verbose=False)
    )
    state = None
    rows = []
    for token in tokens:
        logits, state = model.forward([token], state)
        rows.append(logits.float().numpy())
    return np.stack(rows).astype("float32"), 7.0 if v7 else float(model.version)


def run(model_dir: str, tokens_json: str, out_npy: str) -> None:
    import numpy as np
    import torch

    tokens = [int(t) for t in json.loads(Path(tokens_json).read_text())]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference"
        weights = reference_weights(model_dir)
        v7 = "blocks.0.att.k_k" in weights
        torch.save(weights, f"{path}.pth")
        # Dropped before the reference loads its own copy: the float32 weights are held
        # once, not twice (12-13 GB for a 1.6B model before, about 6.5 GB now).
        del weights
        logits, version = _reference_run(path, v7, tokens)
    np.save(out_npy, logits)
    print(MARK + json.dumps({"version": version, "positions": len(logits)}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    run(*sys.argv[1:4])
