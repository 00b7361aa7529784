"""TEST ONLY: the stand-in's view of the recorded upstream contract.

The factory ships one contract file per pinned mlc-llm commit
(factory/toolchains/contracts/<commit>.json; `contracts/` here links to it and
the conformance image gets a copy through its build context). The stand-in
builds its argument parsers from that file, so it accepts exactly the flags and
choices the pinned CLI declares, no more and no fewer. Standard library only:
it runs inside a toolchain image.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

CONTRACTS = Path(__file__).resolve().parent / "contracts"


def pinned_commit() -> str:
    """The mlc-llm commit this image stands in for (set from the MLC_LLM_COMMIT build arg)."""
    commit = os.environ.get("MLC_STANDIN_COMMIT", "")
    if not commit:
        raise SystemExit("error: MLC_STANDIN_COMMIT is not set; the image build sets it from MLC_LLM_COMMIT")
    return commit


def load(commit: str | None = None) -> dict[str, Any]:
    commit = commit or pinned_commit()
    path = CONTRACTS / f"{commit}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem[:8] for p in CONTRACTS.glob("*.json")))
        raise SystemExit(f"error: no recorded contract for mlc-llm {commit} (recorded: {known})")
    contract: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return contract


def choices(contract: dict[str, Any], spec: str | list[str]) -> list[str]:
    """A literal choice list, or the recorded list a symbolic name stands for."""
    if isinstance(spec, list):
        return spec
    if spec == "quantizations":
        return [q["name"] for q in contract["quantizations"]["names"]]
    if spec == "model_types_or_auto":
        return ["auto", *(m["name"] for m in contract["model_types"]["names"])]
    if spec == "conv_templates":
        return list(contract["conv_templates"]["names"])
    raise SystemExit(f"error: the contract names an unknown choice list {spec!r}")


_TYPES: dict[str, Any] = {"str": str, "int": int, "bool": bool}


def parser(contract: dict[str, Any], command: str, prog: str) -> argparse.ArgumentParser:
    """An argparse parser that accepts exactly the recorded arguments of `command`."""
    p = argparse.ArgumentParser(prog=prog)
    for arg in contract["commands"][command]["arguments"]:
        names = [arg["name"], *arg.get("aliases", [])]
        kwargs: dict[str, Any] = {}
        if arg.get("dest"):
            kwargs["dest"] = arg["dest"]
        if arg["kind"] == "positional":
            p.add_argument(*names)
            continue
        if arg["kind"] == "flag":
            p.add_argument(*names, action="store_true", **kwargs)
            continue
        kwargs["type"] = _TYPES[arg.get("type") or "str"]
        kwargs["default"] = arg.get("default")
        if arg.get("required"):
            kwargs["required"] = True
        if arg.get("choices") is not None:
            kwargs["choices"] = choices(contract, arg["choices"])
        p.add_argument(*names, **kwargs)
    return p
