"""What the parts of the real-size benchmark (bench/real_size.py) agree on: the repository's
root, the bench model's name, the label of the benchmark's own containers, and the longest
any one step may take. bench/real_size.py puts the root on sys.path before it imports the
other parts (real_size_meter.py, real_size_report.py, real_size_llama.py), which import the
factory package."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_LABEL = "org.factory.bench"
MODEL = "rwkv-6-world-bench"
TIMEOUT = 6 * 3600
