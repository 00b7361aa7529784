"""TEST ONLY: `mlc_llm` of the current generation (v0.20.0): convert_weight, gen_config, compile.

Each subcommand accepts exactly the flags of cli/<name>.py at bb586e51 and
rejects anything else (argparse exits 2), so the factory's rendered argv is
held to the pinned contract.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import _artifacts as art

MODEL_TYPES = ("auto", "rwkv5", "rwkv6")


def _convert_weight(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="mlc_llm convert_weight")
    p.add_argument("config")
    p.add_argument("--quantization", required=True)
    p.add_argument("--model-type", default="auto", choices=MODEL_TYPES)
    p.add_argument("--device", default="auto")
    p.add_argument("--source")
    p.add_argument(
        "--source-format", default="auto", choices=("auto", "huggingface-torch", "huggingface-safetensor", "awq")
    )
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--lora-adapter")
    a = p.parse_args(argv)
    if a.device in ("auto", "cuda", "metal", "vulkan", "rocm", "opencl"):
        art.fail(f"--device {a.device} probes a local GPU; none here")
    source = Path(a.source or a.config)
    _, weights = art.read_checkpoint(source, a.source_format)
    art.write_params(weights, a.quantization, Path(a.output), "tensor-cache.json")
    print(f"converted {len(weights)} tensors to {a.output}")


def _gen_config(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="mlc_llm gen_config")
    p.add_argument("config")
    p.add_argument("--quantization", required=True)
    p.add_argument("--model-type", default="auto", choices=MODEL_TYPES)
    p.add_argument("--conv-template", required=True)
    p.add_argument("--context-window-size", type=int)
    p.add_argument("--sliding-window-size", type=int)
    p.add_argument("--prefill-chunk-size", type=int)
    p.add_argument("--attention-sink-size", type=int)
    p.add_argument("--tensor-parallel-shards", type=int)
    p.add_argument("--pipeline-parallel-stages", type=int)
    p.add_argument("--disaggregation", type=bool)
    p.add_argument("--max-batch-size", type=int, default=128)
    p.add_argument("--output", "-o", required=True)
    a = p.parse_args(argv)
    model_config = json.loads((Path(a.config) / "config.json").read_text())
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    chat = {
        "version": "0.1.0",
        "model_type": a.model_type,
        "quantization": a.quantization,
        "model_config": model_config,
        "vocab_size": model_config["vocab_size"],
        "context_window_size": a.context_window_size or -1,
        "sliding_window_size": a.sliding_window_size or -1,
        "prefill_chunk_size": a.prefill_chunk_size or 128,
        "attention_sink_size": a.attention_sink_size or -1,
        "tensor_parallel_shards": a.tensor_parallel_shards or 1,
        "temperature": 1.0,
        "repetition_penalty": 1.0,
        "top_p": 0.3,
        # Upstream's FIXME: the RWKV World tokenizer_model is built but not listed.
        "tokenizer_files": [],
        "tokenizer_info": {"token_postproc_method": "byte_fallback", "prepend_space_in_encode": False},
        "conv_template": {"name": a.conv_template, "roles": {"user": "User", "assistant": "Assistant"},
                          "seps": ["\n\n"], "stop_str": ["\n\n"], "stop_token_ids": [0]},
        "pad_token_id": 0,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }  # fmt: skip
    (out / "mlc-chat-config.json").write_text(json.dumps(chat, indent=2))
    print(f"wrote {out / 'mlc-chat-config.json'}")


def _compile(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="mlc_llm compile")
    p.add_argument("model")
    p.add_argument("--quantization")
    p.add_argument("--model-type", default="auto", choices=MODEL_TYPES)
    p.add_argument("--device", default="auto")
    p.add_argument("--host", default="auto")
    p.add_argument("--enable-subgroups", action="store_true")
    p.add_argument("--opt", default="O2")
    p.add_argument("--system-lib-prefix", default="auto")
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--overrides", default="")
    p.add_argument("--debug-dump")
    a = p.parse_args(argv)
    if a.device in ("auto", "cuda", "metal", "vulkan", "rocm", "opencl", "cpu"):
        art.fail(f"--device {a.device} probes a local device; give an explicit target")
    if a.device.startswith("{"):
        json.loads(a.device)  # a target dict must be JSON
    elif " -" in a.device:
        art.fail(f"TVM 0.26+ rejects the target string {a.device!r}")
    chat_path = Path(a.model)
    chat = json.loads(chat_path.read_text())
    index = json.loads((chat_path.parent / "tensor-cache.json").read_text())
    params = [
        {"name": r["name"], "shape": r["shape"], "dtype": r["dtype"]}
        for shard in index["records"]
        for r in shard["records"]
    ]
    metadata = {
        "model_type": chat["model_type"],
        "quantization": a.quantization or chat["quantization"],
        "context_window_size": chat["context_window_size"],
        "params": params,
        "multi_arch": os.environ.get("MLC_MULTI_ARCH", ""),
    }
    art.compile_library(metadata, a.device, Path(a.output))
    print(f"compiled {a.output}")


def main() -> int:
    if os.environ.get("MLC_STANDIN_FLOW") == "legacy":
        art.fail("this toolchain's mlc-llm predates the `mlc_llm` CLI; use python -m mlc_llm.build")
    commands = {"convert_weight": _convert_weight, "gen_config": _gen_config, "compile": _compile}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: mlc_llm {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    commands[sys.argv[1]](sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
