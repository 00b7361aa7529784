"""TEST ONLY: `mlc_llm` of the current generation (v0.20.0): convert_weight, gen_config, compile.

Each subcommand's parser is built from the recorded contract of the pinned
commit (_contract.py): it accepts exactly the flags and choices of
cli/<name>.py there and rejects anything else (argparse exits 2), so the
factory's rendered argv is held to the pinned contract.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

from . import _artifacts as art
from . import _contract


def _probing(contract: dict[str, Any]) -> list[str]:
    """Devices whose name makes the CLI look for a local device."""
    return ["auto", *contract["targets"]["probe_local_device"]]


def _convert_weight(contract: dict[str, Any], argv: list[str]) -> None:
    a = _contract.parser(contract, "convert_weight", "mlc_llm convert_weight").parse_args(argv)
    # A CPU always exists, so only the GPU kinds (and auto) fail without a GPU.
    if a.device in _probing(contract) and a.device != "cpu":
        art.fail(f"--device {a.device} probes a local GPU; none here")
    source = Path(a.source if a.source not in (None, "auto") else a.config)
    _index_lone_safetensors(contract, source, a.source_format)
    _, weights = art.read_checkpoint(source, a.source_format)
    art.write_params(weights, a.quantization, Path(a.output), contract["params_index"]["name"])
    print(f"converted {len(weights)} tensors to {a.output}")


def _index_lone_safetensors(contract: dict[str, Any], source: Path, source_format: str) -> None:
    """As upstream's weight detection does (contract `source_weights`): a lone
    model.safetensors without an index gets one written into the SOURCE folder.
    On a read-only source that write fails, and so does the conversion."""
    facts = contract.get("source_weights")
    if facts is None or source_format not in facts["formats"]:
        return
    index, single = source / facts["index"], source / facts["single"]
    if index.exists() or not single.is_file():
        return
    with single.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        names = [n for n in json.loads(handle.read(length)) if n != "__metadata__"]
    try:
        with index.open("w", encoding="utf-8") as file:
            json.dump({"weight_map": {name: single.name for name in names}}, file, indent=2)
    except OSError as exc:
        art.fail(f"cannot write {index} ({exc.strerror}): convert_weight indexes a lone {single.name} in place")


def _gen_config(contract: dict[str, Any], argv: list[str]) -> None:
    a = _contract.parser(contract, "gen_config", "mlc_llm gen_config").parse_args(argv)
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


def _compile(contract: dict[str, Any], argv: list[str]) -> None:
    a = _contract.parser(contract, "compile", "mlc_llm compile").parse_args(argv)
    if a.device in _probing(contract):
        art.fail(f"--device {a.device} probes a local device; give an explicit target")
    if a.device.startswith("{"):
        json.loads(a.device)  # a target dict must be JSON
    elif " -" in a.device:
        art.fail(f"TVM 0.26+ rejects the target string {a.device!r}")
    chat_path = Path(a.model)
    chat = json.loads(chat_path.read_text())
    index = json.loads((chat_path.parent / contract["params_index"]["name"]).read_text())
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
    contract = _contract.load()
    commands = {"convert_weight": _convert_weight, "gen_config": _gen_config, "compile": _compile}
    if len(sys.argv) < 2 or sys.argv[1] not in commands or sys.argv[1] not in contract["commands"]:
        print(f"usage: mlc_llm {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    commands[sys.argv[1]](contract, sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
