"""The GPU check's results as text (bench/gpu_check.py): one `GPU-CHECK` line per bundle,
written by `check` on the GPU machine, and read back into fields by result_lines.
Carried to the GPU machine: the standard library only."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

RESULT = "GPU-CHECK "
SUMMARY = "GPU-CHECK-SUMMARY "


@dataclass
class Outcome:
    """One bundle's check: the parity figures (token by token, and prefill), the smoke speeds, the verdict."""

    name: str
    device_name: str = "?"
    figures: Any = None
    prefill: Any = None
    prefill_tok_s: float | None = None
    decode_tok_s: float | None = None
    problems: tuple[str, ...] = ()
    passed: bool = False

    def line(self) -> str:
        f, p = self.figures, self.prefill
        parts = [self.name, f"device={json.dumps(self.device_name, ensure_ascii=False)}"]
        parts += [
            f"kl_mean={_g(f and f.kl_mean)}", f"kl_max={_g(f and f.kl_max)}", f"top1={_g(f and f.top1, '.3f')}",
            f"first_divergence={'-' if f is None or f.first_divergence is None else f.first_divergence}",
            f"prefill_kl_mean={_g(p and p.kl_mean)}", f"prefill_kl_max={_g(p and p.kl_max)}",
            f"prefill_tok_s={_g(self.prefill_tok_s, '.1f')}", f"decode_tok_s={_g(self.decode_tok_s, '.1f')}",
        ]  # fmt: skip
        verdict = "passed" if self.passed else "failed: " + "; ".join(self.problems or ("unknown",))
        return RESULT + " ".join(parts) + " " + verdict


def _g(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def result_lines(text: str) -> list[dict[str, str]]:
    """PURE: the GPU-CHECK lines of `check`'s output as {name, device, ..., verdict}."""
    rows = []
    for line in (x for x in text.splitlines() if x.startswith(RESULT)):
        body = line[len(RESULT) :]
        name, rest = body.split(" ", 1)
        row = {"name": name}
        device = re.match(r'device=("(?:[^"\\]|\\.)*")\s*', rest)
        if device:
            row["device"] = json.loads(device.group(1))
            rest = rest[device.end() :]
        for part in rest.split(" "):
            if "=" in part and "verdict" not in row:
                key, value = part.split("=", 1)
                row[key] = value
            else:
                row["verdict"] = (row.get("verdict", "") + " " + part).strip()
        rows.append(row)
    return rows
