"""TEST ONLY: real artifacts from a real checkpoint with real TVM, in MLC's formats.

The stand-in does not implement RWKV; it writes what mlc-llm's outputs are
made of: params through TVM's own tensor-cache writer (quantized the way the
quantization name says), a chat config with the generation's fields, and a
library compiled by TVM that exposes `_metadata`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

GROUP = 32  # group size of the qNfM_1 group quantizations


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def read_checkpoint(model_dir: Path, source_format: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        fail(f"{config_path} not found")
    config = json.loads(config_path.read_text())
    if source_format != "huggingface-safetensor":
        fail(f"the conformance stand-in reads safetensors only, not {source_format}")
    from safetensors.numpy import load_file

    weights: dict[str, np.ndarray] = {}
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        fail(f"no *.safetensors in {model_dir}")
    for path in files:
        weights.update(load_file(str(path)))
    return config, weights


def quantize(name: str, array: np.ndarray, quant: str) -> dict[str, np.ndarray]:
    """Tensors MLC stores for one weight under `quant` (q0fXX casts; qNfXX_1 packs int4 groups)."""
    match = re.fullmatch(r"q(\d)(f16|f32|bf16)(_\d)?", quant)
    if not match:
        fail(f"unknown quantization {quant}")
    assert match is not None
    bits, storage = int(match.group(1)), {"f16": "float16", "f32": "float32", "bf16": "float32"}[match.group(2)]
    clean = name.removeprefix("rwkv.")
    if bits == 0 or array.ndim != 2 or array.shape[1] % GROUP:
        return {clean: array.astype(storage)}
    rows, cols = array.shape
    groups = array.astype("float32").reshape(rows, cols // GROUP, GROUP)
    max_int = (1 << (bits - 1)) - 1
    scale = np.abs(groups).max(axis=2) / max_int  # NaN in, NaN out: the factory's gate must see it
    safe = np.where(scale == 0, 1, scale)
    codes = np.clip(np.round(groups / safe[..., None]) + max_int, 0, 2 * max_int).astype("uint32")
    per_word = 32 // bits
    codes = codes.reshape(rows, cols // per_word, per_word)
    packed = np.zeros((rows, cols // per_word), dtype="uint32")
    for i in range(per_word):
        packed |= codes[..., i] << np.uint32(i * bits)
    return {f"{clean}.q_weight": packed, f"{clean}.q_scale": scale.astype(storage)}


def write_params(weights: dict[str, np.ndarray], quant: str, out: Path, index_name: str) -> list[dict[str, Any]]:
    from tvm.contrib import tvmjs

    params: dict[str, np.ndarray] = {}
    for name in sorted(weights):
        params.update(quantize(name, weights[name], quant))
    out.mkdir(parents=True, exist_ok=True)
    # Small shards so tests see several of them, as real models have.
    tvmjs.dump_tensor_cache(params, str(out), encode_format="raw", shard_cap_mb=8, show_progress=False)
    if index_name != "tensor-cache.json":
        os.replace(out / "tensor-cache.json", out / index_name)
    (out / "tensor-cache-b16.json").unlink(missing_ok=True)
    return [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype)} for n, a in params.items()]


def compile_library(metadata: dict[str, Any], device: str, output: Path) -> None:
    """A Relax module with `_metadata`, compiled by TVM for the host (the requested
    device is recorded; no GPU toolkit is in this image)."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend import nn

    class Probe(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            self.scale = nn.Parameter((4,), "float32")

        def forward(self, x: nn.Tensor) -> nn.Tensor:
            return x * self.scale

        # The entry points the factory's library gate requires of an RWKV library (and the
        # real runtime calls); here each is the same tiny function.
        def embed(self, x: nn.Tensor) -> nn.Tensor:
            return x * self.scale

        def prefill(self, x: nn.Tensor) -> nn.Tensor:
            return x * self.scale

        def decode(self, x: nn.Tensor) -> nn.Tensor:
            return x * self.scale

        def create_rnn_state(self, x: nn.Tensor) -> nn.Tensor:
            return x * self.scale

    vector = {"x": nn.spec.Tensor((4,), "float32")}
    names = ("forward", "embed", "prefill", "decode", "create_rnn_state")
    mod, _ = Probe().export_tvm(spec={name: vector for name in names})
    builder = relax.BlockBuilder(mod)
    with builder.function("_metadata", params=[]):
        builder.emit_func_output(relax.expr.String(json.dumps({**metadata, "device": device})))
    output.parent.mkdir(parents=True, exist_ok=True)
    tvm.compile(builder.get(), target="llvm").export_library(str(output))
