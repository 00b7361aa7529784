"""Runs INSIDE a toolchain (it needs torch and the `rwkv` package), not in the factory:
the RWKV project's own reference implementation (`rwkv.model.RWKV`, PyPI `rwkv`) on the
same checkpoint a bundle was converted from, for the parity gate.

    python reference_script.py MODEL_DIR TOKENS_JSON OUT_NPY

MODEL_DIR is a Hugging Face-layout checkpoint (config.json and model.safetensors or
pytorch_model*.bin). Its tensors are renamed to the layout the reference loads
(the original RWKV `.pth` names), the reference runs the tokens one at a time in
fp32 on the CPU, and the logits after each token go to OUT_NPY as float32 [T, vocab].
Prints `FACTORY-REFERENCE {json}` with the version the reference detected.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
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


def _hf_tensors(folder: Path) -> dict[str, Any]:
    import torch

    single = folder / "model.safetensors"
    shards = sorted(folder.glob("model-*.safetensors")) or ([single] if single.is_file() else [])
    tensors: dict[str, Any] = {}
    if shards:
        from safetensors.torch import load_file

        for shard in shards:
            tensors.update(load_file(str(shard), device="cpu"))
    else:
        for shard in sorted(folder.glob("pytorch_model*.bin")):
            tensors.update(torch.load(shard, map_location="cpu", weights_only=True))
    if not tensors:
        raise SystemExit(f"{folder}: no model.safetensors or pytorch_model*.bin")
    return tensors


def reference_weights(model_dir: str) -> dict[str, Any]:
    """The checkpoint's tensors under the reference's names, in float32."""
    return {reference_name(k): v.float() for k, v in _hf_tensors(Path(model_dir)).items()}


def reference_logits(weights: dict[str, Any], tokens: list[int]) -> tuple[Any, float]:
    """(float32 [T, vocab] logits after each token, the version the reference detected)."""
    os.environ.setdefault("RWKV_JIT_ON", "0")
    os.environ.setdefault("RWKV_CUDA_ON", "0")
    import numpy as np
    import torch
    from rwkv.model import RWKV

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference"
        torch.save(weights, f"{path}.pth")
        model = RWKV(model=str(path), strategy="cpu fp32", verbose=False)
    state = None
    rows = []
    for token in tokens:
        logits, state = model.forward([token], state)
        rows.append(logits.float().numpy())
    return np.stack(rows).astype("float32"), float(model.version)


def run(model_dir: str, tokens_json: str, out_npy: str) -> None:
    import numpy as np

    tokens = [int(t) for t in json.loads(Path(tokens_json).read_text())]
    logits, version = reference_logits(reference_weights(model_dir), tokens)
    np.save(out_npy, logits)
    print(MARK + json.dumps({"version": version, "positions": len(logits)}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    run(*sys.argv[1:4])
