"""Which x86-64 microarchitecture level a CPU bundle needs, and which this host has.

A CPU bundle's library is compiled for its target's `mcpu`: the portable `x86-64` runs on
any x86-64 machine, `x86-64-v3` (AVX2, FMA, F16C, BMI, ...) only where those
instructions exist, and elsewhere dies with SIGILL somewhere inside the first call. So
`factory pull -t auto` takes the best level this host has, and `factory run` refuses a
library the host cannot execute before loading it. The levels are the x86-64 psABI's
(the same names LLVM takes as `mcpu`); the host's features are the `flags` of
/proc/cpuinfo (Linux). `FACTORY_CPU_FLAGS` (space-separated flags) stands in for them,
to ask what another machine would get.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# Linux /proc/cpuinfo names of what each level adds (psABI x86-64 microarchitecture levels;
# pni is SSE3, abm is LZCNT).
_LEVEL_FLAGS: dict[int, frozenset[str]] = {
    2: frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
    3: frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    4: frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
}
MCPU_LEVELS = {"x86-64": 1, "x86-64-v2": 2, "x86-64-v3": 3, "x86-64-v4": 4}
CPU_FLAGS_ENV = "FACTORY_CPU_FLAGS"


def level_of(flags: frozenset[str]) -> int:
    """PURE: the highest level all of whose features (and the lower levels') are in `flags`."""
    level = 1
    for candidate in (2, 3, 4):
        if not _LEVEL_FLAGS[candidate] <= flags:
            break
        level = candidate
    return level


def missing_for(level: int, flags: frozenset[str]) -> list[str]:
    """PURE: the features a host with `flags` lacks for `level`, sorted."""
    needed = frozenset().union(*(_LEVEL_FLAGS[n] for n in range(2, level + 1)))
    return sorted(needed - flags)


def bundle_level(device: str) -> int | None:
    """PURE: the level an x86-64 CPU bundle's compatibility.device needs; None when it is not
    an x86-64 llvm target with a known level (a GPU bundle, another arch, a named CPU)."""
    if not device.startswith("{"):
        return None
    target = json.loads(device)
    if target.get("kind") != "llvm" or not str(target.get("mtriple", "x86_64")).startswith("x86_64"):
        return None
    return MCPU_LEVELS.get(str(target.get("mcpu", "x86-64")))


def host_flags() -> frozenset[str] | None:
    """This host's CPU features, or None where they cannot be read (not x86-64 Linux)."""
    given = os.environ.get(CPU_FLAGS_ENV)
    if given is not None:
        return frozenset(given.split())
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


@dataclass(frozen=True)
class Shortfall:
    """An x86-64 library this CPU cannot execute: the level it needs, the CPU's, what is missing."""

    needed: int
    host: int
    missing: tuple[str, ...]


def shortfall(device: str) -> Shortfall | None:
    """Whether this CPU lacks what a bundle's compatibility.device needs; None when it runs
    it, or when either side is unknown (not an x86-64 CPU bundle, flags unreadable)."""
    level, flags = bundle_level(device), host_flags()
    if level is None or flags is None or level <= level_of(flags):
        return None
    return Shortfall(level, level_of(flags), tuple(missing_for(level, flags)))
