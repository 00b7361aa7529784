"""TEST ONLY: the legacy `python -m mlc_llm.build` of mlc-llm b44cdc53.

Its parser is built from the recorded contract of the pinned commit
(_contract.py): exactly the fields of core.BuildArgs plus the
--convert-weight-only alias, with the recorded quantization choices. It models
what the legacy flow does without a GPU: a bare "cuda" target probes the GPU;
model names follow the recorded rule; a CUDA target must carry what dlight's
GEMV rule reads (a TVM tag carries it, a bare "cuda -arch=..." string does not);
CUTLASS offload queries the GPU. It writes the legacy layout:
<artifact>/<model>-<quant>/params/ndarray-cache.json, params_shard_*.bin,
mlc-chat-config.json, and <model>-<quant>-<kind>.so.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from . import _artifacts as art
from . import _contract


def _target_kind(contract: dict[str, Any], target: str) -> str:
    targets = contract["targets"]
    if target in targets["probe_local_gpu"]:
        art.fail("Cannot detect local CUDA GPU target!")  # what the legacy flow says without a GPU
    cuda = contract["cuda"]
    if target in {t["tag"] for t in cuda["tags"].values()}:
        return "cuda"
    kind = target.split(maxsplit=1)[0]
    if kind == "cuda" and f"-{cuda['gemv_needs_attribute']}=" not in target:
        # What TVM's Target.max_shared_memory_per_block raises when dlight's GEMV rule asks.
        art.fail(f"KeyError: '{cuda['gemv_needs_attribute']}' (target {target!r}; {cuda['gemv_source']})")
    return {"llvm": "cpu"}.get(kind, kind)


def main() -> int:
    contract = _contract.load()
    a = _contract.parser(contract, "build", "python -m mlc_llm.build").parse_args()
    if a.hf_path:
        art.fail("the stand-in never downloads (--hf-path clones from huggingface.co)")
    model_dir = Path(os.path.normpath(a.model))
    if not model_dir.is_dir():
        art.fail(f"--model {a.model} is not a folder")
    name = model_dir.name
    rule = contract["model_name"]
    if not all(word in name.lower() for word in rule["world_words"]):
        art.fail(f"model {name} is not recognised as rwkv_world")
    if not name.lower().startswith(rule["prefix"]):
        art.fail(f"ValueError: Unsupported model name: {name}")  # relax_model/rwkv.py's check
    kind = _target_kind(contract, a.target)
    out = Path(a.artifact_path) / f"{name}-{a.quantization}"
    params = out / "params"
    if not a.build_model_only:
        config, weights = art.read_checkpoint(
            model_dir, "huggingface-safetensor" if a.use_safetensors else "huggingface-torch"
        )
        art.write_params(weights, a.quantization, params, contract["params_index"]["name"])
        chat = {
            "model_lib": f"{name}-{a.quantization}", "local_id": f"{name}-{a.quantization}",
            "conv_template": "rwkv_world", "temperature": 1.2, "repetition_penalty": 0.996, "top_p": 0.6,
            "mean_gen_len": 128, "max_gen_len": config.get("context_length", 1024), "shift_fill_factor": 0.3,
            "tokenizer_files": ["tokenizer_model"], "model_category": "rwkv_world", "model_name": name,
            "vocab_size": config["vocab_size"], "max_window_size": config.get("context_length", 1024),
        }  # fmt: skip
        (params / "mlc-chat-config.json").write_text(json.dumps(chat, indent=4))
        print(f"converted weights to {params}")
    if a.convert_weights_only:
        return 0
    if kind == "cuda" and not (a.no_cutlass_attn and a.no_cutlass_norm):
        art.fail("CUTLASS kernels query tvm.cuda(0): no CUDA GPU here")
    metadata = {"model_type": "rwkv_world", "quantization": a.quantization, "params": []}
    art.compile_library(metadata, a.target, out / f"{name}-{a.quantization}-{kind}.so")
    print(f"built {out / f'{name}-{a.quantization}-{kind}.so'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
