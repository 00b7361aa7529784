"""TEST ONLY: the legacy `python -m mlc_llm.build` of mlc-llm b44cdc53.

Accepts exactly the fields of core.BuildArgs (plus --convert-weight-only) and
writes the legacy layout: <artifact>/<model>-<quant>/params/ndarray-cache.json,
params_shard_*.bin, mlc-chat-config.json, and <model>-<quant>-<kind>.so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import _artifacts as art

_FLAGS: dict[str, tuple[Any, Any]] = {  # name: (type or "flag", default)
    "model": (str, "auto"), "hf-path": (str, None), "quantization": (str, "q4f16_1"), "max-seq-len": (int, -1),
    "max-vocab-size": (int, 40000), "target": (str, "auto"), "reuse-lib": (str, None),
    "artifact-path": (str, "dist"), "use-cache": (int, 1), "convert-weights-only": ("flag", False),
    "build-model-only": ("flag", False), "debug-dump": ("flag", False), "debug-load-script": ("flag", False),
    "llvm-mingw": (str, ""), "cc-path": (str, ""), "system-lib": ("flag", False), "sep-embed": ("flag", False),
    "use-safetensors": ("flag", False), "enable-batching": ("flag", False), "max-batch-size": (int, 80),
    "no-cutlass-attn": ("flag", False), "no-cutlass-norm": ("flag", False), "no-cublas": ("flag", False),
    "use-cuda-graph": ("flag", False), "num-shards": (int, 1), "use-presharded-weights": ("flag", False),
    "use-flash-attn-mqa": ("flag", False), "sliding-window": (int, -1), "prefill-chunk-size": (int, -1),
    "attention-sink-size": (int, 0), "pdb": ("flag", False), "use-vllm-attention": ("flag", False),
}  # fmt: skip
QUANTIZATIONS = (
    "q0f16",
    "q0f32",
    "q3f16_0",
    "q3f16_1",
    "q4f16_0",
    "q4f16_1",
    "q4f16_2",
    "q4f32_0",
    "q4f32_1",
    "q8f16_0",
    "q8f16_1",
    "q4f16_ft",
    "q8f16_ft",
    "q4f16_ft_group",
    "q8f16_ft_group",
    "q4f16_awq",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mlc_llm.build")
    for name, (kind, default) in _FLAGS.items():
        if kind == "flag":
            p.add_argument(f"--{name}", action="store_true", default=default)
        elif name == "quantization":
            p.add_argument(f"--{name}", type=str, default=default, choices=QUANTIZATIONS)
        else:
            p.add_argument(f"--{name}", type=kind, default=default)
    p.add_argument("--convert-weight-only", dest="convert_weights_only", action="store_true")
    return p


def _target_kind(target: str) -> str:
    if target in ("auto", "cuda", "cuda-multiarch"):
        art.fail("Cannot detect local CUDA GPU target!")  # what the legacy flow says without a GPU
    kind = target.split(maxsplit=1)[0]
    return {"llvm": "cpu"}.get(kind, kind)


def main() -> int:
    a = _parser().parse_args()
    if a.hf_path:
        art.fail("the stand-in never downloads (--hf-path clones from huggingface.co)")
    model_dir = Path(os.path.normpath(a.model))
    if not model_dir.is_dir():
        art.fail(f"--model {a.model} is not a folder")
    name = model_dir.name
    if "rwkv" not in name.lower() or "world" not in name.lower():
        art.fail(f"model {name} is not recognised as rwkv_world")
    kind = _target_kind(a.target)
    out = Path(a.artifact_path) / f"{name}-{a.quantization}"
    params = out / "params"
    if not a.build_model_only:
        config, weights = art.read_checkpoint(
            model_dir, "huggingface-safetensor" if a.use_safetensors else "huggingface-torch"
        )
        art.write_params(weights, a.quantization, params, "ndarray-cache.json")
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
