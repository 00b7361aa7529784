"""The smoke script that runs inside a toolchain: its prompt, its output cap and
the JSON line the factory parses back (gates.parse_smoke)."""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest

from factory.cells import gates
from factory.in_toolchain import smoke_script


def _run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], result: dict[str, Any]) -> str:
    monkeypatch.setattr(smoke_script, "current", lambda params, library, device: result)
    monkeypatch.setattr(sys, "argv", ["smoke_script.py", "current", "/params", "/lib.so", "cuda"])
    smoke_script.main()
    return capsys.readouterr().out.strip()


def test_text_that_says_nan_survives_and_non_finite_floats_come_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    output = 'NaN, "NaN" and BaNaNa; Infinity too'
    line = _run_main(
        monkeypatch,
        capsys,
        {"output": output, "prefill_tok_s": math.inf, "decode_tok_s": 12.5, "logprobs": [-0.5, math.nan, -math.inf]},
    )
    figures = gates.parse_smoke([line])
    assert figures is not None
    assert figures.output == output
    assert figures.prefill_tok_s == math.inf and figures.decode_tok_s == 12.5
    assert figures.logprobs[0] == -0.5 and math.isnan(figures.logprobs[1]) and figures.logprobs[2] == -math.inf
    assert gates.judge_smoke(figures, hint="h").problems == ("the logits contain NaN/Inf",)


def test_the_line_is_strict_json() -> None:
    import json

    line = smoke_script.smoke_line({"output": "NaN", "logprobs": [math.nan]})
    body = line.removeprefix(gates.SMOKE_MARK)

    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    assert json.loads(body, parse_constant=refuse) == {"output": "NaN", "logprobs": ["NaN"]}


def test_a_string_where_a_number_belongs_is_a_clear_gate_failure() -> None:
    with pytest.raises(gates.GateFailure, match=r"logprobs\[1\]: expected a number"):
        gates.parse_smoke(['FACTORY-SMOKE {"output": "x", "logprobs": [-0.1, "oops"]}'])
    with pytest.raises(gates.GateFailure, match="unreadable FACTORY-SMOKE line"):
        gates.parse_smoke(['FACTORY-SMOKE {"output": "x", '])


def test_the_prompt_is_plain_user_content() -> None:
    # Both runtimes' rwkv_world templates add "User: " and "Assistant:" themselves.
    assert "User:" not in smoke_script.PROMPT and "Assistant:" not in smoke_script.PROMPT
    assert smoke_script.PROMPT.strip() == smoke_script.PROMPT


@dataclass
class _ChatConfig:
    max_gen_len: int | None = None


def test_the_legacy_runtime_gets_the_prompt_once_and_an_output_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, Any] = {}

    class ChatModule:
        def __init__(
            self, model: str, device: str = "auto", chat_config: Any = None, model_lib_path: str | None = None
        ) -> None:
            # The signature of mlc_chat.ChatModule at mlc-llm b44cdc53.
            calls["init"] = {"model": model, "device": device, "config": chat_config, "lib": model_lib_path}

        def generate(self, prompt: str) -> str:
            calls["prompt"] = prompt
            return "RWKV is an RNN."

        def stats(self) -> str:
            return "prefill: 100.0 tok/s, decode: 20.0 tok/s"

    fake = types.ModuleType("mlc_chat")
    fake.ChatModule = ChatModule  # type: ignore[attr-defined]
    fake.ChatConfig = _ChatConfig  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlc_chat", fake)
    result = smoke_script.legacy("/params", "/lib.so", "cuda")
    assert calls["prompt"] == smoke_script.PROMPT
    assert isinstance(calls["init"]["config"], _ChatConfig)
    assert calls["init"]["config"].max_gen_len == smoke_script.MAX_TOKENS
    assert result["decode_tok_s"] == 20.0


def test_the_current_runtime_gets_plain_user_content(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class Completions:
        def create(self, **kwargs: Any) -> list[Any]:
            seen.update(kwargs)
            return []

    class MLCEngine:
        def __init__(self, **kwargs: Any) -> None:
            self.chat = types.SimpleNamespace(completions=Completions())

        def terminate(self) -> None:
            pass

    fake = types.ModuleType("mlc_llm")
    fake.MLCEngine = MLCEngine  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlc_llm", fake)
    smoke_script.current("/params", "/lib.so", "cuda")
    assert seen["messages"] == [{"role": "user", "content": smoke_script.PROMPT}]
    assert seen["max_tokens"] == smoke_script.MAX_TOKENS
