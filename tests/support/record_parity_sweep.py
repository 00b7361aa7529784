"""Record the parity sweep: the parity gate's per-position figures for correct bundles of
several seeds and generations, and for the broken variants the sensitivity test makes,
into tests/golden/parity_sweep.json, which tests/unit/test_parity_sweep.py judges.

    .venv/bin/python -m tests.support.record_parity_sweep WORK_FOLDER [--seeds 23 31 37 41]

It builds tiny exact-group example models (`factory example-model --version V --seed S`)
for RWKV-5, 6 and 7 at q4f32_1 and q4f16_1 on the portable CPU target in the wheel
toolchain, with the smoke and parity gates, and keeps what the parity gate compared
(reference.npy, bundle.npy, bundle-prefill.npy under WORK/work/parity/) as per-position
figures: KL, the reference's top token and margin, the bundle's top token, max |dlogit|.
Then, for the first seed of each generation, every tensor of the checkpoint is perturbed
in turn (tests/support/sensitivity.py, in the same image) and the perturbed reference's
figures against the unperturbed one are kept as broken variants. Needs Docker, the
wheelhouse and the source archives the mlc tests use. Takes about 30 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from factory.cells.parity import PARITY_PREFILL, PARITY_TEXT, PARITY_TOKENS, positions
from factory.in_toolchain.vm_script import Tokenizer
from tests.support.docker import BASE_IMAGE
from tests.support.run import REPO, factory
from tests.support.wheel import ensure_wheel_wheelhouse, sources_env, wheel_manifest

GOLDEN = REPO / "tests" / "golden" / "parity_sweep.json"
GENERATIONS = (5, 6, 7)
QUANTS = ("q4f32_1", "q4f16_1")
TARGET = "cpu-x86_64"


def _rows(reference: Any, bundle: Any) -> list[list[float]]:
    """Seven significant digits: an exact fixture's KL of 1e-11 must not round to 0."""
    return [
        [float(f"{v:.7g}") if isinstance(v, float) else v for v in p.as_row()] for p in positions(reference, bundle)
    ]


def _env() -> dict[str, str]:
    return {
        **sources_env(),
        "FACTORY_WHEELHOUSE": str(ensure_wheel_wheelhouse()),
        "FACTORY_OFFLINE": "1",
        "FACTORY_LOCAL_IMAGES": "1",
    }


def build(root: Path, seeds: list[int]) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = []
    for version in GENERATIONS:
        for seed in seeds:
            name = f"rwkv-{version}-sweep-s{seed}"
            folder = root / "models" / name
            done = factory("example-model", str(folder), "--version", str(version), "--seed", str(seed))
            assert done.returncode == 0, done.stderr
            models.append({"name": name, "local": {"path": str(folder)}, "type": f"rwkv{version}-world"})
    data = wheel_manifest(models, list(QUANTS), [TARGET], name="parity-sweep")
    data["toolchains"]["wheel-tvm0.26"]["base_image"] = BASE_IMAGE
    manifest = root / "sweep.yaml"
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    env = _env()
    locked = factory("lock", "-m", str(manifest), env=env, cwd=root, timeout=600)
    assert locked.returncode == 0, locked.stderr
    # A refused bundle is data here too: the build's exit code is not the sweep's verdict.
    done = factory(
        "build", "-m", str(manifest), "--work", "work", "--out", "dist", "--smoke", env=env, cwd=root, timeout=7200
    )
    print(done.stdout[-3000:], done.stderr[-3000:])
    cases = []
    for model in models:
        version, seed = int(model["type"][4]), int(model["name"].rsplit("-s", 1)[1])
        for quant in QUANTS:
            found = sorted((root / "work" / "parity").glob(f"{model['name']}-{quant}-*"))
            assert len(found) == 1, (model["name"], quant, found)
            work = found[0]
            reference = np.load(work / "reference.npy")
            start = PARITY_PREFILL - 1
            cases.append(
                {
                    "generation": version,
                    "seed": seed,
                    "quantization": quant,
                    "target": TARGET,
                    "token": _rows(reference, np.load(work / "bundle.npy")),
                    "prefill": {
                        "first_position": start,
                        "rows": _rows(reference[start:], np.load(work / "bundle-prefill.npy")),
                    },
                }
            )
    return cases


def broken(root: Path, seed: int) -> list[dict[str, Any]]:
    cases = []
    for version in GENERATIONS:
        name = f"rwkv-{version}-sweep-s{seed}"
        bundle = root / "dist" / f"{name}-q4f32_1-{TARGET}"
        image = json.loads((bundle / "factory-bundle.json").read_text())["provenance"]["image"]
        tokens = Tokenizer(bundle / "tokenizer_model").encode(PARITY_TEXT)[:PARITY_TOKENS]
        folder = root / "sensitivity" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tokens.json").write_text(json.dumps(tokens))
        model = root / "models" / name
        argv = ["python", "/t/sensitivity.py", "/factory", "/m", "/s/tokens.json", "/s"]
        mounts = [
            f"{REPO / 'factory' / 'in_toolchain'}:/factory:ro",
            f"{REPO / 'tests' / 'support'}:/t:ro",
            f"{model}:/m:ro",
            f"{folder}:/s",
        ]
        command = ["docker", "run", "--rm", "--network", "none", "-e", "HOME=/tmp"]
        command += ["--user", f"{os.getuid()}:{os.getgid()}"]
        for mount in mounts:
            command += ["-v", mount]
        subprocess.run([*command, image, *argv], check=True, capture_output=True)
        base = np.load(folder / "base.npy")
        for index, variant in enumerate(json.loads((folder / "variants.json").read_text())):
            cases.append(
                {
                    "generation": version,
                    "seed": seed,
                    "variant": variant,
                    "token": _rows(base, np.load(folder / f"{index:03d}.npy")),
                }
            )
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[23, 31, 37, 41])
    args = parser.parse_args()
    root = args.work.resolve()
    root.mkdir(parents=True, exist_ok=True)
    git = subprocess.run(["git", "rev-parse", "HEAD"], check=True, cwd=REPO, capture_output=True, text=True)
    commit = git.stdout.strip()
    record = {
        "recorded": {
            "date": datetime.date.today().isoformat(),
            "commit": commit,
            "toolchain": "wheel-tvm0.26",
            "rows": "[kl, reference_top, margin, bundle_top, max_abs_dlogit] per position",
        },
        "correct": build(root, args.seeds),
        "broken": broken(root, args.seeds[0]),
    }
    GOLDEN.write_text(json.dumps(record, separators=(",", ":")) + "\n")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
