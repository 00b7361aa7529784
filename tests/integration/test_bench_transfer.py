"""bench/transfer.py runs end to end (tiny size) and prints its ratio line. No
speed is asserted here: speed targets live in the benchmark's own output."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.s3servers import rgw_server

pytestmark = pytest.mark.s3
REPO = Path(__file__).resolve().parents[2]


def test_the_benchmark_prints_its_ratio_line() -> None:
    rgw_server()  # started by .ci/run; skips (or fails in CI) when absent
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "transfer.py"), "--gib", "0.05"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    match = re.fullmatch(
        r"pull/s5cmd=(\d+\.\d\d) pull/awscli=(\d+\.\d\d) pull/s5cmd\+sha256sum=(\d+\.\d\d) publish/s5cmd=(\d+\.\d\d) "
        r"second-target-upload-bytes=(\d+) lib-bytes=(\d+)",
        last,
    )
    assert match, last
    # The second target shares the params: it uploads exactly its library.
    assert match.group(5) == match.group(6)
