"""Runs INSIDE a toolchain (container or metal-runner prefix), not in the factory:
one fixed prompt through a bundle with its generation's runtime, printing one
line `FACTORY-SMOKE {json}` with the output, prefill/decode tok/s and, where the
runtime gives them, the log-probabilities of the generated tokens.

    python smoke_script.py FLOW BUNDLE_PARAMS_DIR LIBRARY DEVICE
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

# Plain user content: both runtimes wrap it in the model's conversation template
# (rwkv-world at mlc-llm b44cdc53, cpp/conv_templates.cc; rwkv_world at bb586e51,
# python/mlc_llm/conversation_template/rwkv.py), which adds "User: " and "Assistant:".
PROMPT = "Tell me about the RWKV language model in one sentence."
MAX_TOKENS = 32
# How a non-finite float travels in the JSON line (strict JSON has no NaN/Infinity);
# gates.parse_smoke turns these strings back into floats, and only where a number belongs.
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def legacy(params: str, library: str, device: str) -> dict[str, Any]:
    from mlc_chat import ChatConfig, ChatModule  # mlc-llm b44cdc53's runtime

    # ChatModule(model, device, chat_config, model_lib_path); max_gen_len caps the reply.
    config = ChatConfig(max_gen_len=MAX_TOKENS)
    chat = ChatModule(model=params, model_lib_path=library, device=device, chat_config=config)
    output = chat.generate(prompt=PROMPT)
    stats = chat.stats()
    numbers = re.findall(r"(prefill|decode): ([0-9.]+) tok/s", stats)
    speeds = {name: float(value) for name, value in numbers}
    return {"output": output, "prefill_tok_s": speeds.get("prefill"), "decode_tok_s": speeds.get("decode")}


def current(params: str, library: str, device: str) -> dict[str, Any]:
    from mlc_llm import MLCEngine  # mlc-llm v0.20's runtime

    engine = MLCEngine(model=params, model_lib=library, device=device, mode="interactive")
    try:
        output = ""
        logprobs: list[float] = []
        extra: dict[str, Any] = {}
        for response in engine.chat.completions.create(
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=MAX_TOKENS,
            logprobs=True,
            top_logprobs=1,
            stream=True,
            stream_options={"include_usage": True},
        ):
            for choice in response.choices:
                output += choice.delta.content or ""
                for item in (choice.logprobs.content if choice.logprobs else None) or []:
                    logprobs.append(item.logprob)
            if response.usage is not None and response.usage.extra:
                extra = response.usage.extra
    finally:
        engine.terminate()
    return {
        "output": output,
        "prefill_tok_s": extra.get("prefill_tokens_per_s"),
        "decode_tok_s": extra.get("decode_tokens_per_s"),
        "logprobs": logprobs,
    }


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float replaced by its NON_FINITE name. Only
    floats are touched: text the model printed (even "NaN") stays as it was."""
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE[repr(value)]
    if isinstance(value, dict):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def smoke_line(result: dict[str, Any]) -> str:
    return "FACTORY-SMOKE " + json.dumps(finite_json(result), default=str, allow_nan=False)


def main() -> None:
    flow, params, library, device = sys.argv[1:5]
    result = legacy(params, library, device) if flow == "legacy" else current(params, library, device)
    print(smoke_line(result), flush=True)


if __name__ == "__main__":
    main()
