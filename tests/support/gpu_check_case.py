"""The prepared GPU check (bench/gpu_check.py) on a real build, without a GPU: `prepare`
writes the folder the device tool carries (within its 64 MiB), and the folder's own
`run.sh` runs `check --devices vulkan` in the toolchain image on Mesa's lavapipe, with the
carried runtime-only TVM (the image's Python is 3.11, so the image's own tvm_ffi, of the
same version as the carried cp312 wheel, stands in for it), one passed line per Vulkan
bundle. The CUDA bundles' check runs too and must fail cleanly for want of a GPU.

Called by the mlc test module with its built fixture's root, dist, work and image."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"
LIMIT = 64 << 20
MOUNT = "/gpu-check"
QUANT = "q4f16_1"


def _prepare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "prepare", *args], capture_output=True, text=True, timeout=900, check=False
    )


def _in_image(
    image: str, folder: Path, *command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    flags = [x for k, v in (env or {}).items() for x in ("-e", f"{k}={v}")]
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{folder}:{MOUNT}:ro", "-e", "HOME=/tmp", *flags,
         "--entrypoint", command[0], image, *command[1:]],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


def _lines(text: str) -> dict[str, str]:
    return {line.split(" ")[1]: line for line in text.splitlines() if line.startswith("GPU-CHECK ")}


def check_gpu_check_prepares_and_runs(root: Path, dist: Path, work: Path, image: str) -> None:
    out = root / "gpu-check"
    # The smoke runs decode 8 tokens here (32 by default): lavapipe decodes a few a second.
    # q4f16_1 only: with every generation's q4f32_1 bundles too the folder passed 64 MiB
    # (71 MiB; each quantization's params are ~4.5 MiB of incompressible 4-bit groups).
    done = _prepare(
        "--dist", str(dist), "--work", str(work), "--out", str(out), "--image", image, "--smoke-tokens", "8",
        "--quants", QUANT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "gpu-check folder: " in done.stdout and "MiB" in done.stdout, done.stdout

    # Complete, and within what the device tool carries.
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and not p.is_symlink())
    assert 0 < size <= LIMIT, size
    config = json.loads((out / "gpu-check.json").read_text())
    manifests = [d / "factory-bundle.json" for d in dist.iterdir()]
    every = {m.parent.name: json.loads(m.read_text()) for m in manifests if m.is_file()}
    gpu_bundles = {
        k: v for k, v in every.items() if v["target"].split("-")[0] in ("vulkan", "cuda") and v["quant"] == QUANT
    }
    assert any(v["quant"] != QUANT for v in every.values())  # so --quants had something to leave out
    assert gpu_bundles and {b["name"] for b in config["bundles"]} == set(gpu_bundles)
    listed_files = 0
    for entry in config["bundles"]:
        manifest = gpu_bundles[entry["name"]]
        assert entry["device"] == ("vulkan" if "-vulkan-" in entry["name"] else "cuda"), entry
        listed = {f["path"]: f["sha256"] for f in manifest["files"]}
        assert {k: v for k, v in entry["files"].items() if k != "factory-bundle.json"} == listed
        for sha in entry["files"].values():
            assert hashlib.sha256(gzip.decompress((out / "blobs" / f"{sha}.gz").read_bytes())).hexdigest() == sha
        listed_files += len(entry["files"])
    # A CUDA and a Vulkan bundle of one model and quantization share their params: stored once.
    assert len(list((out / "blobs").iterdir())) < listed_files
    for model in {b["model"] for b in config["bundles"]}:
        parity = work / config["models"][model]["from"]
        assert (out / "parity" / model / "tokens.json").read_bytes() == (parity / "tokens.json").read_bytes()
        reference = gzip.decompress((out / "parity" / model / "reference.npy.gz").read_bytes())
        assert reference == (parity / "reference.npy").read_bytes()
    assert (out / "vm_script.py").read_bytes() == (REPO / "factory" / "in_toolchain" / "vm_script.py").read_bytes()
    assert (out / "parity.py").read_bytes() == (REPO / "factory" / "cells" / "parity.py").read_bytes()
    with tarfile.open(out / "tvm-runtime.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"tvm/__init__.py", "tvm/lib/libtvm_runtime.so", "tvm/lib/libtvm_runtime_vulkan.so"} <= names
    assert {"tvm/lib/libtvm_runtime_cuda.so", "tvm/lib/libcudart.so.13"} <= names
    assert not any("libtvm_compiler" in n for n in names)
    wheels = list((out / "wheels").glob("apache_tvm_ffi-*-cp312-*.whl"))
    assert len(wheels) == 1 and config["runtime"]["ffi"] in wheels[0].name.replace("_", "-"), wheels
    assert subprocess.run(["bash", "-n", str(out / "run.sh")], check=False).returncode == 0

    # Over the limit: refused, nothing written.
    refused = _prepare(
        "--dist", str(dist), "--work", str(work), "--out", str(root / "gpu-check-small"), "--image", image,
        "--ffi-wheel", str(wheels[0]), "--limit-mib", "1", "--quants", QUANT,
    )  # fmt: skip
    assert refused.returncode == 2 and "over the 1" in refused.stderr, refused.stderr[-2000:]
    assert not (root / "gpu-check-small").exists()

    # run.sh in the toolchain image: Vulkan on lavapipe, one passed line per Vulkan bundle.
    ran = _in_image(image, out, "bash", f"{MOUNT}/run.sh", env={"PYTHON": "python", "GPU_CHECK_DEVICES": "vulkan"})
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-4000:]
    lines = _lines(ran.stdout)
    vulkan = {b["name"] for b in config["bundles"] if b["device"] == "vulkan"}
    assert set(lines) == vulkan, output[-4000:]
    for name, line in lines.items():
        assert line.endswith(" passed") and 'device="llvmpipe' in line, line
        assert " top1=" in line and " kl_mean=" in line and " decode_tok_s=-" not in line, (name, line)
    assert f"GPU-CHECK-SUMMARY passed={len(vulkan)} failed=0 devices=vulkan" in ran.stdout, output[-2000:]

    # CUDA without a GPU: every CUDA bundle fails, each with the reason, and check exits 1.
    cuda = {b["name"] for b in config["bundles"] if b["device"] == "cuda"}
    ran = _in_image(image, out, "python", f"{MOUNT}/gpu_check.py", "check", "--dir", MOUNT, "--devices", "cuda")
    lines = _lines(ran.stdout)
    assert ran.returncode == 1 and set(lines) == cuda, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert all("failed: " in line and "no cuda device" in line for line in lines.values()), lines
