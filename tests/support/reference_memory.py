"""Runs INSIDE the wheel toolchain: the parity reference's peak resident memory, one
fresh process per checkpoint, so the tests can hold it to what the weights need.

    python reference_memory.py FACTORY_DIR TOKENS_JSON WORK_DIR MODEL_DIR...

Prints `PEAK {json}`: {MODEL_DIR: the reference process's peak RSS in bytes}.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def peak(script: Path, model: str, tokens: str, out: str) -> int:
    # A child of a fresh interpreter: RUSAGE_CHILDREN then reads this one run only.
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, str(script), model, tokens, out],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return int(done.stdout.split()[-1]) * 1024  # Linux reports KiB


def main(factory_dir: str, tokens: str, work: str, *models: str) -> None:
    script = Path(factory_dir) / "reference_script.py"
    peaks = {m: peak(script, m, tokens, str(Path(work) / f"{Path(m).name}.npy")) for m in models}
    print("PEAK " + json.dumps(peaks), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
