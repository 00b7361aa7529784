"""The prepared GPU check (bench/gpu_check.py) on a real build, without a GPU: `prepare`
writes the folder the device tool carries (within its 64 MiB), and the folder's own
`run.sh` runs `check --devices vulkan` in the toolchain image on Mesa's lavapipe, with the
carried runtime-only TVM (the image's Python is 3.11, so the image's own tvm_ffi, of the
same version as the carried cp312 wheel, stands in for it), one passed line per Vulkan
bundle. The CUDA bundles' check runs too and must fail cleanly for want of a GPU.

Speed cells: world.yaml's RWKV-4 World 7B at its real shape, q4f16_1 for sm_90, built by
`prepare` in the toolchain image (the release's gen_config and compile argv; the only
real-size CUDA compile in CI, where the wheel's wmma crash showed), carried as library,
config, tokenizer and index alone; and a tiny Vulkan bundle without its params. On
lavapipe the tiny cell's params are written from its index and it runs; the 7B cell's
index is held to its library's params, then it stops for want of a GPU before a byte of
its 4 GiB is written.

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
SPEED_MODEL = "rwkv-4-world-7b"
SPEED_BUNDLE = "rwkv-4-world-3b-q4f16_1-vulkan-x86_64"  # the mlc module's RWKV-4 (tiny, by world.yaml's name)
# RWKV-4 World 7B's quantized matrices: embedding and head (65536 x 4096), and per layer the
# time mix's key, value, receptance and output and the channel mix's receptance (4096 x 4096)
# and its key and value (16384 x 4096): 4 bits a weight in uint32, a float16 scale per 32.
MATRIX_WEIGHTS_7B = 2 * 65536 * 4096 + 32 * (5 * 4096 * 4096 + 2 * 16384 * 4096)


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


def _lines(text: str, mark: str = "GPU-CHECK ") -> dict[str, str]:
    return {line.split(" ")[1]: line for line in text.splitlines() if line.startswith(mark)}


def check_gpu_check_prepares_and_runs(root: Path, dist: Path, work: Path, image: str) -> None:
    out = root / "gpu-check"
    # The smoke runs decode 8 tokens here (32 by default): lavapipe decodes a few a second.
    # q4f16_1 only: with every generation's q4f32_1 bundles too the folder passed 64 MiB
    # (71 MiB; each quantization's params are ~4.5 MiB of incompressible 4-bit groups).
    done = _prepare(
        "--dist", str(dist), "--work", str(work), "--out", str(out), "--image", image, "--smoke-tokens", "8",
        "--quants", QUANT, "--speed-models", SPEED_MODEL, "--speed-quants", QUANT, "--speed-target", "cuda-sm90",
        "--speed-bundles", SPEED_BUNDLE, "--speed-tokens", "8",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "gpu-check folder: " in done.stdout and "MiB" in done.stdout, done.stdout
    assert f"speed cell {SPEED_MODEL}-{QUANT}-cuda-sm90: kernel check passed (" in done.stdout, done.stdout

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
    _check_speed_cells(out, config, dist)

    # Over the limit: refused, nothing written.
    refused = _prepare(
        "--dist", str(dist), "--work", str(work), "--out", str(root / "gpu-check-small"), "--image", image,
        "--ffi-wheel", str(wheels[0]), "--limit-mib", "1", "--quants", QUANT,
    )  # fmt: skip
    assert refused.returncode == 2 and "over the 1" in refused.stderr, refused.stderr[-2000:]
    assert not (root / "gpu-check-small").exists()

    # run.sh in the toolchain image: Vulkan on lavapipe, one passed line per Vulkan bundle,
    # and the tiny speed cell run on params written from its index.
    ran = _in_image(image, out, "bash", f"{MOUNT}/run.sh", env={"PYTHON": "python", "GPU_CHECK_DEVICES": "vulkan"})
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-4000:]
    speed = _lines(ran.stdout, "GPU-CHECK-SPEED ")
    assert set(speed) == {SPEED_BUNDLE}, output[-4000:]
    line = speed[SPEED_BUNDLE]
    assert line.endswith(" ran") and 'device="llvmpipe' in line and " decoded=8 " in line, line
    assert " decode_tok_s=-" not in line and " prefill_tok_s=-" not in line and " seed_decode_tok_s=- " in line, line
    params = sum(f.stat().st_size for f in (dist / SPEED_BUNDLE).glob("params_shard_*.bin"))
    assert f" params_mib={params / (1 << 20):.0f} " in line, (params, line)
    assert "GPU-CHECK-SPEED-SUMMARY ran=1 failed=0 devices=vulkan" in ran.stdout, output[-2000:]
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

    # The 7B speed cell without a GPU: its index matches its library, then it stops.
    ran = _in_image(image, out, "python", f"{MOUNT}/gpu_check.py", "speed", "--dir", MOUNT, "--devices", "cuda")
    speed = _lines(ran.stdout, "GPU-CHECK-SPEED ")
    name = f"{SPEED_MODEL}-{QUANT}-cuda-sm90"
    assert ran.returncode == 1 and set(speed) == {name}, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "failed: no cuda device here" in speed[name] and " params_mib=- " in speed[name], speed[name]
    assert " seed_prefill_tok_s=1104.7 seed_decode_tok_s=122.6 " in speed[name], speed[name]


def _check_speed_cells(out: Path, config: dict[str, object], dist: Path) -> None:
    """The speed cells carry a library, its config, tokenizer and index, never params; the 7B
    cell's index describes RWKV-4 World 7B at q4f16_1 and its library is compiled for sm_90."""
    cells = {c["name"]: c for c in config["speed"]["cells"]}  # type: ignore[index]
    name = f"{SPEED_MODEL}-{QUANT}-cuda-sm90"
    assert set(cells) == {name, SPEED_BUNDLE}, cells
    for cell in cells.values():
        assert set(cell["files"]) == {cell["library"], "mlc-chat-config.json", "tokenizer_model", "tensor-cache.json"}
    tiny = cells[SPEED_BUNDLE]
    listed = {
        f["path"]: f["sha256"] for f in json.loads((dist / SPEED_BUNDLE / "factory-bundle.json").read_text())["files"]
    }
    assert {k: listed[k] for k in tiny["files"]} == tiny["files"] and tiny["seed"] is None

    big = cells[name]
    assert big["device"] == "cuda" and big["quant"] == QUANT and big["seed"]["decode_tok_s"] == 122.6

    def blob(rel: str) -> bytes:
        return gzip.decompress((out / "blobs" / f"{big['files'][rel]}.gz").read_bytes())

    chat = json.loads(blob("mlc-chat-config.json"))
    model = chat["model_config"]
    assert (model["hidden_size"], model["num_hidden_layers"], model["intermediate_size"]) == (4096, 32, 16384)
    assert chat["quantization"] == QUANT and chat["model_type"] == "rwkv4" and model["rescale_every"] == 6
    index = json.loads(blob("tensor-cache.json"))
    records = [r for shard in index["records"] for r in shard["records"]]
    packed = sum(r["nbytes"] for r in records if r["dtype"] == "uint32")
    scales = sum(r["nbytes"] for r in records if r["name"].endswith(".q_scale"))
    assert packed == MATRIX_WEIGHTS_7B // 2 and scales == MATRIX_WEIGHTS_7B // 32 * 2, (packed, scales)
    assert index["metadata"]["ParamBytes"] == sum(r["nbytes"] for r in records)
    assert all(shard["nbytes"] <= 32 << 20 or len(shard["records"]) == 1 for shard in index["records"])
    library = blob(big["library"])
    assert b"sm_90" in library and len(library) > len(gzip.compress(library))
