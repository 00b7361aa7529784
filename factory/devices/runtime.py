"""The runtime a bundle needs, in words a user can act on, and whether a given runtime fits.

The compatibility key (factory-bundle.json `compatibility`) is what clients compare; its
hash in the catalog tells two bundles apart but says nothing to a person. These words
name the mlc-llm and TVM builds, the flow and the device, from the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from factory.errors import UsageError

RUNTIME_KEYS = ("mlc_llm", "tvm", "flow", "device")
"""What `factory pull --runtime KEY=VALUE` may state about the runtime at hand."""


def _short(value: object) -> str:
    text = str(value)
    return text[:8] if len(text) == 40 and all(c in "0123456789abcdef" for c in text) else text


def runtime_words(compat: Mapping[str, object]) -> str:
    """PURE: e.g. "mlc-llm 79d603f0 (current flow: the mlc_llm package, tensor-cache.json) on TVM
    apache-tvm==0.26.0 with TVM's Vulkan runtime from apache/tvm c7b458e9; device vulkan:generic;
    the factory's patches c55f967f"."""
    flow = str(compat.get("flow", "?"))
    mlc = compat.get("mlc_llm")
    tvm = compat.get("tvm")
    package = "mlc_chat, `python -m mlc_chat`" if flow == "legacy" else "the mlc_llm package"
    index = compat.get("params_index")
    parts = [f"mlc-llm {_short(mlc) if mlc else '(unrecorded)'} ({flow} flow: {package}"
             + (f", {index})" if index else ")")]  # fmt: skip
    if tvm:
        source = "PyPI wheel" if str(tvm).startswith("apache-tvm==") else "mlc-ai/relax"
        parts.append(f"on TVM {_short(tvm)} ({source})")
    if compat.get("tvm_vulkan"):
        parts.append(f"with TVM's Vulkan runtime built from apache/tvm {_short(compat['tvm_vulkan'])}")
    if compat.get("tvm_web"):
        parts.append(f"with TVM's web runtime built from apache/tvm {_short(compat['tvm_web'])}")
    text = " ".join(parts) + f"; device {compat.get('device', '?')}"
    if compat.get("patches"):
        text += f"; the factory's patches {_short(str(compat['patches']))[:8]}"
    return text


@dataclass(frozen=True)
class RuntimeSpec:
    """What a user says of the runtime they have: KEY=VALUE pairs; a commit may be a prefix."""

    values: Mapping[str, str]

    @classmethod
    def parse(cls, items: Sequence[str]) -> RuntimeSpec:
        values: dict[str, str] = {}
        for item in items:
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in RUNTIME_KEYS or not value.strip():
                raise UsageError(
                    f"--runtime {item!r} is not KEY=VALUE with KEY one of {', '.join(RUNTIME_KEYS)}",
                    hint="e.g. --runtime mlc-llm=79d603f0 --runtime tvm=apache-tvm==0.26.0",
                )
            values[key] = value.strip()
        return cls(values)

    def misfits(self, compat: Mapping[str, object]) -> list[str]:
        """PURE: each stated part the bundle does not fit, in words."""
        out = []
        for key, want in self.values.items():
            have = str(compat.get(key) or "")
            commit_prefix = len(want) >= 7 and all(c in "0123456789abcdef" for c in want) and have.startswith(want)
            fits = have == want or commit_prefix or have == f"apache-tvm=={want}"
            if not fits:
                out.append(f"{key.replace('_', '-')}: yours is {want}, the bundle needs {have or 'nothing recorded'}")
        return out
