"""The GPU check's packing (bench/gpu_check.py `prepare`, here): read a factory build's
bundles, and write the folder the device tool carries to the GPU machine: the bundles' files
as content-addressed gzipped blobs, the parity inputs, the runtime (gpu_check_runtime.py),
the code `check` runs with there (CARRIED, vm_script.py, parity.py) and run.sh. This module
and gpu_check_runtime.py stay here; the folder is described in gpu_check.py's docstring."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_check_runtime import export_runtime, ffi_wheel, newest_image
from gpu_check_shared import CONFIG, MIB, RUNTIME_TAR, Refusal, parse_devices
from gpu_check_speed import INDEX, Cell, bundle_cells, cell_files, model_cells, speed_prompt, vm_device

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MANIFEST = "factory-bundle.json"
# What `check` and `vm` need on the GPU machine: the command line and the modules it imports
# there. The folder carries them beside run.sh, which starts gpu_check.py from the folder.
CARRIED = (
    "gpu_check.py", "gpu_check_shared.py", "gpu_check_device.py", "gpu_check_report.py", "gpu_check_speed_device.py",
)  # fmt: skip

RUN_SH = r"""#!/usr/bin/env bash
# The GPU check's one command (bench/gpu_check.py wrote this folder): from the repository root,
#   bash {rel}/run.sh
# CUDA bundles, then Vulkan ones on the GPU's own Vulkan driver; one line per bundle.
# PYTHON (default python3) and GPU_CHECK_DEVICES (default "cuda vulkan") change what runs.
set -u
here="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
py="${{PYTHON:-python3}}"
export PYTHONUNBUFFERED=1
started=$SECONDS
echo "== $("$py" -V 2>&1) at $(command -v "$py"), $(uname -m)"
# tvm-ffi (the version the carried TVM runtime was built with) for this python, unless it has one.
if ! "$py" -c "import tvm_ffi" 2>/dev/null; then
  site=/tmp/gpu-check-site
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$here"/wheels/*.whl || echo "== pip could not install the carried tvm-ffi wheel"
  export PYTHONPATH="$site${{PYTHONPATH:+:$PYTHONPATH}}"
fi
# The Vulkan loader (and glvnd) where the machine has none.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  for f in "$here"/debs/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${{VK_DRIVER_FILES:-}}" ] && [ -f "$icd" ] \
   && ! ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json >/dev/null 2>&1; then
  export VK_DRIVER_FILES="$icd"
fi
MESA_SHADER_CACHE_DIR="$(mktemp -d)"
export MESA_SHADER_CACHE_DIR
echo "== VK_DRIVER_FILES=${{VK_DRIVER_FILES:-}}; loaders: $(ldconfig -p 2>/dev/null | grep -c 'libvulkan\.so\.1')"
nvidia-smi -L 2>/dev/null || echo "== no nvidia-smi"
status=0
for device in ${{GPU_CHECK_DEVICES:-cuda vulkan}}; do
  case "$device" in cuda) limit={cuda_s} ;; vulkan) limit={vulkan_s} ;; *) limit=120 ;; esac
  echo "== $device"
  "$py" "$here/gpu_check.py" check --dir "$here" --devices "$device" --deadline-s "$limit" || status=1
  # Speed cells (params written here from their index first): prefill/decode tok/s.
  "$py" "$here/gpu_check.py" speed --dir "$here" --devices "$device" --deadline-s {speed_s} || status=1
done
nvidia-smi -L 2>/dev/null || true
echo "== done in $((SECONDS - started)) s, exit $status"
exit $status
"""


@dataclass(frozen=True)
class Bundle:
    folder: Path
    name: str
    model: str
    quant: str
    target: str
    device: str
    """The Relax VM runner's device: cpu, cuda or vulkan."""
    arch: str | None
    params_dir: str
    library: str
    files: dict[str, tuple[str, int]]
    """Path in the bundle -> (sha256, size)."""


def read_bundle(folder: Path) -> Bundle:
    """A bundle folder's factory-bundle.json, read the way factory/cells/run_bundle.py reads it."""
    path = folder / MANIFEST
    data = json.loads(path.read_text())
    compat = data["compatibility"]
    device = str(compat["device"])
    spec = json.loads(device) if device.startswith("{") else {"kind": device.split(":", 1)[0]}
    kind = str(spec.get("kind"))
    roles = {f["role"]: f["path"] for f in data["files"] if f["role"] in {"chat-config", "library"}}
    if "chat-config" not in roles or "library" not in roles:
        raise Refusal(f"{path}: lists no chat config or no library")
    files = {str(f["path"]): (str(f["sha256"]), int(f["size"])) for f in data["files"]}
    return Bundle(
        folder=folder, name=folder.name, model=str(data["model"]), quant=str(data["quant"]),
        target=str(data["target"]), device=vm_device(kind), arch=spec.get("arch"),
        params_dir=str(Path(roles["chat-config"]).parent), library=str(roles["library"]), files=files,
    )  # fmt: skip


def bundles_in(dist: Path) -> list[Bundle]:
    if not dist.is_dir():
        raise Refusal(f"--dist {dist}: not a folder")
    found = [read_bundle(d) for d in sorted(dist.iterdir()) if (d / MANIFEST).is_file()]
    if not found:
        raise Refusal(f"--dist {dist}: no bundle folders (with {MANIFEST}) in it")
    return found


def parity_inputs(work: Path, every: list[Bundle], model: str) -> Path:
    """The parity gate's folder with tokens.json and reference.npy for `model` (CPU bundles first)."""
    candidates = sorted((b for b in every if b.model == model), key=lambda b: (b.device != "cpu", b.name))
    for b in candidates:
        folder = work / "parity" / f"{b.model}-{b.quant}-{b.library}"
        if (folder / "tokens.json").is_file() and (folder / "reference.npy").is_file():
            return folder
    tried = ", ".join(f"parity/{b.model}-{b.quant}-{b.library}" for b in candidates)
    raise Refusal(
        f"--work {work}: no parity tokens.json and reference.npy for {model} (looked in {tried}); "
        "build with --smoke so the parity gate runs on one bundle of each model (a CPU one, say)"
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def _gzip(source: Path, dest: Path) -> None:
    with source.open("rb") as f, gzip.open(dest, "wb", compresslevel=6) as g:
        shutil.copyfileobj(f, g, MIB)


def folder_size(root: Path) -> int:
    """Bytes of every regular file under root, each inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        st = path.stat()
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def prepare(args: argparse.Namespace) -> int:
    dist, work, out = Path(args.dist).resolve(), Path(args.work).resolve(), Path(args.out).resolve()
    devices = parse_devices(args.devices)
    every = bundles_in(dist)
    quants = {q.strip() for q in args.quants.split(",") if q.strip()}
    chosen = [b for b in every if b.device in devices and (not quants or b.quant in quants)]
    speed_models = [m.strip() for m in args.speed_models.split(",") if m.strip()]
    speed_bundles = [n.strip() for n in args.speed_bundles.split(",") if n.strip()]
    if not chosen and not (speed_models or speed_bundles):
        wanted = "/".join(devices) + (f" {'/'.join(sorted(quants))}" if quants else "")
        raise Refusal(f"--dist {dist}: no {wanted} bundles among {', '.join(b.name for b in every)}")
    for b in chosen:
        if b.device == "cuda" and b.arch != "sm_90":
            print(f"note: {b.name} is for {b.arch}; the H200 is sm_90", file=sys.stderr)
    if out.exists() and any(out.iterdir()) and not (out / CONFIG).is_file():
        raise Refusal(f"--out {out}: a folder that gpu_check.py did not write; give an empty or new one")
    image = args.image or _bundle_image(chosen) or newest_image("factory-toolchain/wheel-tvm0.26")
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    stage.chmod(0o755)  # mkdtemp's 0700 would keep a container's other user out
    builds = Path(tempfile.mkdtemp(prefix=f".{out.name}-speed-", dir=out.parent))
    try:
        cells = bundle_cells(every, speed_bundles)
        if speed_models:
            speed_quants = [q.strip() for q in args.speed_quants.split(",") if q.strip()]
            manifest = Path(args.manifest).resolve()
            cells += model_cells(manifest, speed_models, speed_quants, args.speed_target, image, builds)
        config = _stage(stage, args, dist, work, chosen, every, image, cells)
        size = folder_size(stage)
        limit = int(args.limit_mib * MIB)
        print(f"gpu-check folder: {size} bytes ({size / MIB:.1f} MiB) of {args.limit_mib} MiB, {len(chosen)} bundles")
        if size > limit:
            raise Refusal(
                f"the folder would be {size / MIB:.1f} MiB, over the {args.limit_mib} MiB the device tool carries; "
                f"select fewer bundles (--devices, --quants) or smaller ones"
            )
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        for folder in (stage, builds):
            if folder.exists():
                shutil.rmtree(folder)
    for b in config["bundles"]:
        print(f"  {b['name']} ({b['device']})")
    for c in config["speed"]["cells"]:
        print(f"  {c['name']} ({c['device']}, speed: params made on the GPU machine)")
    print(f"wrote {out}; on the GPU machine: bash {args.run_rel or out}/run.sh")
    return 0


def _bundle_image(chosen: list[Bundle]) -> str | None:
    images = {json.loads((b.folder / MANIFEST).read_text())["provenance"].get("image") for b in chosen}
    images.discard(None)
    if len(images) > 1:
        several = ", ".join(sorted(images))
        raise Refusal(f"the bundles come from {len(images)} toolchain images ({several}); pass --image")
    return str(images.pop()) if images else None


def _blob(blobs: Path, source: Path) -> str:
    """source gzipped into blobs under its sha256 (once); the sha256."""
    sha = sha256_of(source)
    if not (blobs / f"{sha}.gz").exists():
        _gzip(source, blobs / f"{sha}.gz")
    return sha


def _stage(
    stage: Path, args: argparse.Namespace, dist: Path, work: Path, chosen: list[Bundle], every: list[Bundle],
    image: str, cells: list[Cell],
) -> dict[str, Any]:  # fmt: skip
    blobs = stage / "blobs"
    blobs.mkdir()
    listed = []
    for b in chosen:
        files = {**b.files, MANIFEST: ("", 0)}
        entry: dict[str, str] = {}
        for rel, (sha, size) in sorted(files.items()):
            source = b.folder / rel
            if not source.is_file():
                raise Refusal(f"{b.folder}: {rel} is missing")
            actual = sha256_of(source)
            if sha and (actual != sha or source.stat().st_size != size):
                raise Refusal(f"{source}: sha256 {actual} is not the {sha} that {MANIFEST} lists")
            entry[rel] = _blob(blobs, source)
        listed.append(
            {
                "name": b.name, "model": b.model, "quant": b.quant, "target": b.target, "device": b.device,
                "params_dir": b.params_dir, "library": b.library, "files": entry,
            }
        )  # fmt: skip
    models = {}
    for model in sorted({b.model for b in chosen}):
        source = parity_inputs(work, every, model)
        folder = stage / "parity" / model
        folder.mkdir(parents=True)
        shutil.copyfile(source / "tokens.json", folder / "tokens.json")
        _gzip(source / "reference.npy", folder / "reference.npy.gz")
        models[model] = {"tokens": f"parity/{model}/tokens.json", "reference": f"parity/{model}/reference.npy.gz",
                         "from": str(source.relative_to(work))}  # fmt: skip
    runtime = export_runtime(image, stage / RUNTIME_TAR)
    wheels = stage / "wheels"
    wheels.mkdir()
    wheel = ffi_wheel(runtime["ffi"], args.python, Path(args.ffi_wheel) if args.ffi_wheel else None, wheels)
    if args.debs:
        debs = sorted(Path(args.debs).glob("*.deb"))
        if not debs:
            raise Refusal(f"--debs {args.debs}: no .deb files in it")
        (stage / "debs").mkdir()
        for deb in debs:
            shutil.copyfile(deb, stage / "debs" / deb.name)
    carry_code(stage)
    sys.path.insert(0, str(REPO))
    from factory.cells.gating import SMOKE_PROMPT

    speed_cells = [
        {
            "name": c.name, "model": c.model, "quant": c.quant, "target": c.target, "device": c.device,
            "library": c.library, "index": INDEX, "seed": c.seed,
            "files": {rel: _blob(blobs, path) for rel, path in sorted(cell_files(c).items())},
        }
        for c in cells
    ]  # fmt: skip
    config = {
        "image": image, "runtime": runtime, "ffi_wheel": f"wheels/{wheel.name}", "python": args.python,
        "smoke": {"prompt": SMOKE_PROMPT, "tokens": args.smoke_tokens}, "models": models, "bundles": listed,
        "speed": {"prompt": speed_prompt(), "tokens": args.speed_tokens, "cells": speed_cells},
    }  # fmt: skip
    (stage / CONFIG).write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n")
    rel = args.run_rel or Path(args.out).name
    (stage / "run.sh").write_text(
        RUN_SH.format(rel=rel, cuda_s=args.cuda_s, vulkan_s=args.vulkan_s, speed_s=args.speed_s)
    )
    (stage / "run.sh").chmod(0o755)
    return config


def carry_code(stage: Path) -> None:
    """The code the folder carries: vm_script.py and parity.py from the factory, unchanged,
    and the check's own modules (CARRIED), so that `check` and `vm` run from the folder alone."""
    shutil.copyfile(REPO / "factory" / "in_toolchain" / "vm_script.py", stage / "vm_script.py")
    shutil.copyfile(REPO / "factory" / "cells" / "parity.py", stage / "parity.py")
    for name in CARRIED:
        shutil.copyfile(HERE / name, stage / name)
