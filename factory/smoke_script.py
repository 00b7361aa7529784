"""Runs INSIDE a toolchain (container or metal-runner prefix), not in the factory:
one fixed prompt through a bundle with its generation's runtime, printing one
line `FACTORY-SMOKE {json}` with the output, prefill/decode tok/s and, where the
runtime gives them, the log-probabilities of the generated tokens.

    python smoke_script.py FLOW BUNDLE_PARAMS_DIR LIBRARY DEVICE
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

PROMPT = "User: Tell me about the RWKV language model in one sentence.\n\nAssistant:"
MAX_TOKENS = 32


def legacy(params: str, library: str, device: str) -> dict[str, Any]:
    from mlc_chat import ChatModule  # mlc-llm b44cdc53's runtime

    chat = ChatModule(model=params, model_lib_path=library, device=device)
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


def main() -> None:
    flow, params, library, device = sys.argv[1:5]
    result = legacy(params, library, device) if flow == "legacy" else current(params, library, device)
    # NaN is not JSON; keep it visible as a string the factory turns back into a float.
    print("FACTORY-SMOKE " + json.dumps(result, default=str).replace("NaN", '"nan"'), flush=True)


if __name__ == "__main__":
    main()
