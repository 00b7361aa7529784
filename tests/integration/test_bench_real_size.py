"""bench/real_size.py's machinery on the tiny shape: the factory build and the bare mlc-llm
commands run on one checkpoint, every container is timed and its peak memory read from
the engine, and the exact fixture's parity holds. No speed is asserted: the 1.6B figures
are the benchmark's own output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.wheel import sources_env

pytestmark = [pytest.mark.mlc, pytest.mark.docker, pytest.mark.hub]
REPO = Path(__file__).resolve().parents[2]
LAST = re.compile(r"overhead=(\d+\.\d\d) factory=([0-9.]+) bare=([0-9.]+) gates=([0-9.]+) peak-gate=(\d+)")


def test_the_real_size_benchmark_runs_its_machinery_on_the_tiny_shape(tmp_path: Path) -> None:
    sources_env()  # the source archives the toolchain image is built from
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "real_size.py"), "--shape", "tiny", "--quant", "q4f32_1",
         "--target", "cpu-x86_64", "--work", str(tmp_path / "work")],
        capture_output=True, text=True, check=False, timeout=3600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-2000:]
    lines = done.stdout.strip().splitlines()
    match = LAST.fullmatch(lines[-1])
    assert match, lines[-1]
    overhead, ours, theirs, gates, peak = (float(g) for g in match.groups())
    assert ours > 0 and theirs > 0 and gates > 0 and overhead == pytest.approx(ours / theirs, abs=0.01)
    assert peak > 50  # MiB: the gates load TVM, torch and the reference in their containers
    # Both sides ran each mlc_llm step, and the engine timed and measured each container.
    for step in ("convert_weight", "gen_config", "compile"):
        line = next((line for line in lines if line.startswith("bare ") and f" {step} " in line), None)
        assert line is not None, (step, lines)
        seconds, peak_text = line.split()[-3], line.split()[-2]
        assert float(seconds) > 0 and int(peak_text) > 0, line
    for node in ("fetch:", "tokenizer:", "convert:", "compile:", "bundle:"):
        assert any(line.startswith(f"node {node}") for line in lines), (node, lines)
    # The exact fixture: q4f32_1 is float32 rounding only, on the factory's CPU bundle.
    result = next(line for line in lines if line.startswith("q4f32_1 cpu-x86_64: "))
    kl = float(re.search(r"parity KL mean ([0-9.e+-]+) top-1 1\.00", result).group(1))  # type: ignore[union-attr]
    assert kl <= 1e-8, result
    # Each container's figures were also written as it ended, for a run that dies later.
    records = [json.loads(line) for line in (tmp_path / "work" / "containers.jsonl").read_text().splitlines()]
    by_name = {r["container"]: r for r in records}
    assert any(name.startswith("bare ") and name.endswith(" compile") for name in by_name), by_name
    assert any(name.startswith("compile:") for name in by_name), by_name
    assert all(r["seconds"] > 0 for r in records), records
    # The engine's stats stream gives its first reading a second or two after a start, so only
    # a container that lived longer than that is sure to have a peak when it ends.
    assert all(r["peak_bytes"] > 0 for r in records if r["seconds"] > 10), records
