"""A prepared GPU check (not a test): smoke and parity of a factory build's CUDA and Vulkan
bundles on a machine with a GPU that has no network, no factory and no TVM of its own (the
device tool's H200: Python 3.12 with numpy and msgpack, NVIDIA's driver, 64 MiB of files in).

    .venv/bin/python bench/gpu_check.py prepare --dist DIST --work WORK --out DIR \\
        [--image IMAGE] [--ffi-wheel WHEEL] [--debs FOLDER] [--devices cuda,vulkan] [--limit-mib 64]
    python3 DIR/gpu_check.py check --dir DIR [--devices cuda,vulkan] [--deadline-s 420]
    bash DIR/run.sh

`prepare` runs here. From a `factory build --out DIST --work WORK --smoke` it writes DIR:

- `blobs/SHA256.gz`: every file of the selected bundles, once (content-addressed: a CUDA and
  a Vulkan bundle of one model and quantization share their params) and gzipped (libraries
  shrink about 4x), checked against the sha256 in each bundle's factory-bundle.json;
  `gpu-check.json` lists the bundles' files.
- `parity/MODEL/tokens.json` and `reference.npy.gz`: the parity gate's tokens and the RWKV
  reference's logits for them (WORK/parity/MODEL-QUANT-LIBRARY/; they depend on the model
  only, so one bundle's, the CPU one's where there is one, serves every bundle of it).
- `vm_script.py` and `parity.py`: copies of factory/in_toolchain/vm_script.py (the runner the
  gates use) and factory/cells/parity.py (the gate's figures and bounds), unchanged.
- `tvm-runtime.tar.gz`: apache-tvm's Python package from the bundles' toolchain image
  (its .py files) with the runtime libraries only (libtvm_runtime, _extra, _cuda, _vulkan;
  never the 256 MB libtvm_compiler.so), and the image's libcudart.so.13, which
  libtvm_runtime_cuda.so links. TVM imports runtime-only with TVM_USE_RUNTIME_LIB=1.
- `wheels/`: the apache-tvm-ffi wheel (the image's version) for the check machine's Python
  (`--python`, 3.12 by default), downloaded with pip unless `--ffi-wheel` names one.
- `debs/`: the .deb files of `--debs` (the Vulkan loader: libvulkan1 and glvnd, for a
  machine that has NVIDIA's Vulkan driver but no loader).
- `gpu_check.py` (this file) and `run.sh`, the one command for the GPU machine.

It refuses (exit 2) a DIR over `--limit-mib` (what the device tool carries), and prints the size.

`check` runs there (or here, or in the toolchain image): for each selected bundle, vm_script's
`logits` (token by token, then a prefill of PARITY_PREFILL tokens and the rest decoded, as
the parity gate runs it) and `run` (the smoke gate's prompt, greedy decode), both through
TVM's Relax VM on the bundle's device, with the carried runtime-only TVM (`vm`, below); the
logits against the reference with parity.py's compare and verdict, the smoke figures judged
as the smoke gate does. One line per bundle:

    GPU-CHECK NAME device="..." kl_mean=.. kl_max=.. top1=.. first_divergence=..
        prefill_kl_mean=.. prefill_kl_max=.. prefill_tok_s=.. decode_tok_s=.. passed|failed[: why]

and a last line `GPU-CHECK-SUMMARY passed=N failed=M`. Exit 1 if any failed, 2 if there was
nothing to check. Nothing of the factory package is imported there: only the standard
library, numpy and what DIR carries.

`vm` (internal) is how `check` starts vm_script: it imports the carried TVM runtime-only
(TVM_USE_RUNTIME_LIB=1; TVM_DEVICE_BACKEND_AUTOLOAD=0, since runtime-only TVM loads no
device runtime and an image's own TVM plugins must not load), checks that the carried
libtvm_runtime.so is the one loaded, loads the device's runtime library (as `import tvm`
does when its compiler is there), gives `tvm.relax` its one runtime piece the script uses
(`VirtualMachine`, which tvm.relax re-exports from tvm.runtime.vm), and runs the script.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MANIFEST = "factory-bundle.json"
CONFIG = "gpu-check.json"
RUNTIME_TAR = "tvm-runtime.tar.gz"
MIB = 1 << 20
LIMIT_MIB = 64
DEFAULT_DEVICES = ("cuda", "vulkan")
# The Relax VM runner's device for each kind of library (factory/cells/run_bundle.py).
VM_DEVICES = {"llvm": "cpu", "vulkan": "vulkan", "cuda": "cuda"}
# Each device's runtime library beside libtvm_runtime.so.
SIDECARS = {"cpu": (), "cuda": ("tvm_runtime_cuda",), "vulkan": ("tvm_runtime_vulkan",)}
RESULT = "GPU-CHECK "
SUMMARY = "GPU-CHECK-SUMMARY "
FFI_DIST = "apache-tvm-ffi"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

# Runs inside the toolchain image (its python): writes a tar.gz of the runtime-only TVM to
# stdout, with runtime.json (versions) first.
_EXPORT_SCRIPT = r"""
import importlib.metadata as md, importlib.util, io, json, os, sys, tarfile
site = os.path.dirname(importlib.util.find_spec("tvm").submodule_search_locations[0])
skip_dirs = {"__pycache__", "3rdparty", "src", "include", "web", "cmake", "lib64"}
files = []
for top, dirs, names in os.walk(os.path.join(site, "tvm")):
    dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
    files += [os.path.join(top, n) for n in sorted(names) if n.endswith(".py")]
lib = os.path.join(site, "tvm", "lib")
libs = sorted(n for n in os.listdir(lib) if n.startswith("libtvm_runtime") and n.endswith(".so"))
files += [os.path.join(lib, n) for n in libs]
files += [os.path.join(site, "tvm", n) for n in ("LICENSE", "NOTICE") if os.path.isfile(os.path.join(site, "tvm", n))]
cudart = None
for path in sys.path:
    candidate = os.path.join(path, "nvidia", "cu13", "lib", "libcudart.so.13")
    if os.path.isfile(candidate):
        cudart = candidate
        break
meta = {
    "tvm": md.version("apache-tvm"), "ffi": md.version("apache-tvm-ffi"),
    "python": "%d.%d" % sys.version_info[:2], "libs": libs, "cudart": bool(cudart),
}
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w:gz", compresslevel=9) as tar:
    data = json.dumps(meta).encode()
    info = tarfile.TarInfo("runtime.json"); info.size = len(data); info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
    for path in files:
        tar.add(path, arcname=os.path.relpath(path, site), recursive=False)
    if cudart:
        tar.add(cudart, arcname="tvm/lib/libcudart.so.13", recursive=False)
sys.stdout.buffer.write(out.getvalue())
"""

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
done
nvidia-smi -L 2>/dev/null || true
echo "== done in $((SECONDS - started)) s, exit $status"
exit $status
"""


class Refusal(Exception):
    """An input or size problem: exit 2 with the message."""


# --------------------------------------------------------------------------- prepare


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
        target=str(data["target"]), device=VM_DEVICES.get(kind, kind), arch=spec.get("arch"),
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


def newest_image(repository: str) -> str:
    out = subprocess.run(
        ["docker", "images", repository, "--format", "{{.CreatedAt}}\t{{.Repository}}:{{.Tag}}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    rows = sorted(line.split("\t") for line in out.splitlines() if "\t" in line and not line.endswith(":<none>"))
    if not rows:
        raise Refusal(f"no image {repository} here; pass --image")
    return rows[-1][1]


def export_runtime(image: str, dest: Path) -> dict[str, Any]:
    """The runtime-only TVM from `image` into dest (tar.gz); returns its runtime.json."""
    done = subprocess.run(
        ["docker", "run", "--rm", "-i", "--network", "none", "--entrypoint", "python", image, "-"],
        input=_EXPORT_SCRIPT.encode(), capture_output=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise Refusal(f"could not export TVM's runtime from {image}: {done.stderr.decode(errors='replace')[-2000:]}")
    dest.write_bytes(done.stdout)
    with tarfile.open(dest) as tar:
        member = tar.extractfile("runtime.json")
        assert member is not None
        meta: dict[str, Any] = json.loads(member.read())
        names = set(tar.getnames())
    needed = ("libtvm_runtime.so", "libtvm_runtime_cuda.so", "libtvm_runtime_vulkan.so")
    missing = [n for n in needed if n not in meta["libs"]]
    if missing or "tvm/__init__.py" not in names:
        raise Refusal(f"{image}'s TVM lacks {', '.join(missing) or 'tvm/__init__.py'}")
    if any("libtvm_compiler" in n for n in names):
        raise Refusal("the runtime archive holds libtvm_compiler (a bug in gpu_check.py)")
    return meta


def ffi_wheel(version: str, python: str, given: Path | None, into: Path) -> Path:
    if given is not None:
        if not given.is_file() or f"-{version}-" not in given.name.replace("_", "-").replace("apache-tvm-ffi", ""):
            raise Refusal(f"--ffi-wheel {given}: not the apache-tvm-ffi {version} wheel the image's TVM needs")
        shutil.copy2(given, into / given.name)
        return into / given.name
    tag = python.replace(".", "")
    argv = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", python, "--implementation", "cp", "--abi", f"cp{tag}", "-d", str(into),
        *(x for p in PLATFORMS for x in ("--platform", p)), f"{FFI_DIST}=={version}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("apache_tvm_ffi-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise Refusal(
            f"pip could not download {FFI_DIST}=={version} for Python {python}: {done.stderr[-1500:]}\n"
            f"  fix: download it elsewhere and pass --ffi-wheel"
        )
    return wheels[0]


def _gzip(source: Path, dest: Path) -> None:
    with source.open("rb") as f, gzip.open(dest, "wb", compresslevel=6) as g:
        shutil.copyfileobj(f, g, MIB)


def _gunzip(source: Path, dest: Path) -> str:
    """Unpack source into dest; its sha256."""
    digest = hashlib.sha256()
    with gzip.open(source, "rb") as f, dest.open("wb") as g:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
            g.write(block)
    return digest.hexdigest()


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
    chosen = [b for b in every if b.device in devices]
    if not chosen:
        raise Refusal(f"--dist {dist}: no {'/'.join(devices)} bundles among {', '.join(b.name for b in every)}")
    for b in chosen:
        if b.device == "cuda" and b.arch != "sm_90":
            print(f"note: {b.name} is for {b.arch}; the H200 is sm_90", file=sys.stderr)
    if out.exists() and any(out.iterdir()) and not (out / CONFIG).is_file():
        raise Refusal(f"--out {out}: a folder that gpu_check.py did not write; give an empty or new one")
    image = args.image or _bundle_image(chosen) or newest_image("factory-toolchain/wheel-tvm0.26")
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    stage.chmod(0o755)  # mkdtemp's 0700 would keep a container's other user out
    try:
        config = _stage(stage, args, dist, work, chosen, every, image)
        size = folder_size(stage)
        limit = int(args.limit_mib * MIB)
        print(f"gpu-check folder: {size} bytes ({size / MIB:.1f} MiB) of {args.limit_mib} MiB, {len(chosen)} bundles")
        if size > limit:
            raise Refusal(
                f"the folder would be {size / MIB:.1f} MiB, over the {args.limit_mib} MiB the device tool carries; "
                f"select fewer bundles (--devices) or smaller ones"
            )
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    for b in config["bundles"]:
        print(f"  {b['name']} ({b['device']})")
    print(f"wrote {out}; on the GPU machine: bash {args.run_rel or out}/run.sh")
    return 0


def _bundle_image(chosen: list[Bundle]) -> str | None:
    images = {json.loads((b.folder / MANIFEST).read_text())["provenance"].get("image") for b in chosen}
    images.discard(None)
    if len(images) > 1:
        several = ", ".join(sorted(images))
        raise Refusal(f"the bundles come from {len(images)} toolchain images ({several}); pass --image")
    return str(images.pop()) if images else None


def _stage(
    stage: Path, args: argparse.Namespace, dist: Path, work: Path, chosen: list[Bundle], every: list[Bundle], image: str
) -> dict[str, Any]:
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
            if not (blobs / f"{actual}.gz").exists():
                _gzip(source, blobs / f"{actual}.gz")
            entry[rel] = actual
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
    shutil.copyfile(REPO / "factory" / "in_toolchain" / "vm_script.py", stage / "vm_script.py")
    shutil.copyfile(REPO / "factory" / "cells" / "parity.py", stage / "parity.py")
    shutil.copyfile(Path(__file__).resolve(), stage / "gpu_check.py")
    sys.path.insert(0, str(REPO))
    from factory.cells.gating import SMOKE_PROMPT

    config = {
        "image": image, "runtime": runtime, "ffi_wheel": f"wheels/{wheel.name}", "python": args.python,
        "smoke": {"prompt": SMOKE_PROMPT, "tokens": args.smoke_tokens}, "models": models, "bundles": listed,
    }  # fmt: skip
    (stage / CONFIG).write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n")
    rel = args.run_rel or Path(args.out).name
    (stage / "run.sh").write_text(RUN_SH.format(rel=rel, cuda_s=args.cuda_s, vulkan_s=args.vulkan_s))
    (stage / "run.sh").chmod(0o755)
    return config


# --------------------------------------------------------------------------- check


@dataclass
class Outcome:
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


def parse_devices(text: str) -> tuple[str, ...]:
    devices = tuple(d.strip() for d in text.split(",") if d.strip())
    wrong = [d for d in devices if d not in SIDECARS]
    if wrong or not devices:
        raise Refusal(f"--devices {text!r}: give some of {', '.join(SIDECARS)}")
    return devices


def _module_from(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _extract_runtime(tar_path: Path, into: Path) -> Path:
    with tarfile.open(tar_path) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python before 3.11.4: our own archive, regular files only
            tar.extractall(into)
    return into


def _materialize(folder: Path, blobs: Path, bundle: dict[str, Any]) -> Path:
    """The bundle as a folder of hard links to the unpacked blobs (not symbolic links: TVM
    resolves those and takes a library's format from the blob's name, which has no suffix)."""
    root = folder / str(bundle["name"])
    for rel, sha in bundle["files"].items():
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(blobs / sha, link)
        except OSError:
            shutil.copyfile(blobs / sha, link)
    return root


def _unpack_blobs(base: Path, bundles: list[dict[str, Any]], into: Path) -> list[str]:
    """Every blob the bundles use, unpacked into `into`; the shas missing or not matching."""
    into.mkdir(parents=True)
    bad = []
    for sha in sorted({s for b in bundles for s in b["files"].values()}):
        path = base / "blobs" / f"{sha}.gz"
        if not path.is_file() or _gunzip(path, into / sha) != sha:
            bad.append(sha)
    return bad


class Runner:
    """Starts vm_script through `gpu_check.py vm` with the carried runtime, under one deadline."""

    def __init__(self, base: Path, runtime: Path, ffi: str, deadline: float, per_run_s: float) -> None:
        self.base, self.runtime, self.ffi = base, runtime, ffi
        self.deadline, self.per_run_s = deadline, per_run_s
        env = dict(os.environ)
        lib = runtime / "tvm" / "lib"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
        env.setdefault("MESA_SHADER_CACHE_DIR", str(runtime.parent / "mesa-shader-cache"))
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env

    def run(self, device: str, *argv: str) -> tuple[int, list[str], float]:
        left = self.deadline - time.monotonic()
        if left < 5:
            return 124, ["the check's deadline passed before this run"], 0.0
        command = [
            sys.executable, str(self.base / "gpu_check.py"), "vm", "--runtime", str(self.runtime),
            "--device", device, "--ffi", self.ffi, "--", str(self.base / "vm_script.py"), *argv,
        ]  # fmt: skip
        started = time.monotonic()
        try:
            done = subprocess.run(
                command, env=self.env, capture_output=True, text=True, timeout=min(left, self.per_run_s), check=False
            )
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return 124, [*out.splitlines()[-5:], f"timed out after {time.monotonic() - started:.0f} s"], 0.0
        lines = (done.stdout + done.stderr).splitlines()
        return done.returncode, lines, time.monotonic() - started


def _marked(lines: list[str], mark: str) -> dict[str, Any] | None:
    for line in reversed(lines):
        if line.startswith(mark):
            value: dict[str, Any] = json.loads(line[len(mark) :])
            return value
    return None


def _tail(lines: list[str], count: int = 3) -> str:
    useful = [line.strip() for line in lines if line.strip() and not line.startswith("GPU-CHECK-TVM")]
    return " | ".join(useful[-count:])[-600:]


def check_bundle(bundle: dict[str, Any], config: dict[str, Any], base: Path, tmp: Path, runner: Runner) -> Outcome:
    import numpy as np

    parity = sys.modules["gpu_check_parity"]
    outcome = Outcome(bundle["name"])
    problems: list[str] = []
    root = _materialize(tmp / "bundles", tmp / "blobs", bundle)
    params = str(root / bundle["params_dir"]) if bundle["params_dir"] not in ("", ".") else str(root)
    library = str(root / bundle["library"])
    device = bundle["device"]
    model = config["models"][bundle["model"]]
    tokens = json.loads((base / model["tokens"]).read_text())
    prefill = min(parity.PARITY_PREFILL, len(tokens))
    out_npy = tmp / f"{bundle['name']}.npy"
    # Smoke first: its line names the device, and a bundle that cannot run fails here.
    smoke = config["smoke"]
    code, lines, _ = runner.run(device, "run", params, library, smoke["prompt"], str(smoke["tokens"]), device)
    figures = _marked(lines, "FACTORY-SMOKE ")
    if code != 0 or figures is None:
        problems.append(f"smoke run exited {code}: {_tail(lines)}")
    else:
        named = figures.get("device")
        outcome.device_name = device if named in (None, "", "None") else str(named)
        outcome.prefill_tok_s, outcome.decode_tok_s = figures.get("prefill_tok_s"), figures.get("decode_tok_s")
        if not figures.get("logits_ok"):
            problems.append(f"logits have shape {figures.get('logits_shape')}, the vocab {figures.get('vocab_size')}")
        if figures.get("finite") is False:
            problems.append("the logits contain NaN/Inf")
        if not figures.get("generated_tokens"):
            problems.append("the model produced no output")
    if problems and figures is None:
        outcome.problems = tuple(problems)
        return outcome  # it did not run at all: the logits run would fail the same way
    code, lines, _ = runner.run(
        device, "logits", params, library, str(base / model["tokens"]), str(out_npy), device, str(prefill)
    )
    prefill_npy = Path(str(out_npy)[: -len(".npy")] + "-prefill.npy")
    if code != 0 or not out_npy.is_file() or not prefill_npy.is_file():
        problems.append(f"logits run exited {code}: {_tail(lines)}")
    else:
        reference_npy = tmp / f"{bundle['model']}-reference.npy"
        if not reference_npy.is_file():
            _gunzip(base / model["reference"], reference_npy)
        reference = np.load(reference_npy)
        _, bound = parity.threshold_for(bundle["quant"])
        try:
            outcome.figures = parity.compare(reference, np.load(out_npy), kl_bound=bound.kl_max)
            start = prefill - 1
            outcome.prefill = parity.compare(
                reference[start:], np.load(prefill_npy), kl_bound=bound.kl_max, first_position=start
            )
            _, found, _ = parity.verdict(outcome.figures, bundle["quant"], outcome.prefill)
            problems += [f"parity: {p}" for p in found]
        except ValueError as e:
            problems.append(f"parity: {e}")
    outcome.problems = tuple(problems)
    outcome.passed = not problems
    return outcome


def check(args: argparse.Namespace) -> int:
    started = time.monotonic()
    base = Path(args.dir).resolve()
    config_path = base / CONFIG
    if not config_path.is_file():
        raise Refusal(f"--dir {base}: no {CONFIG} (write the folder with `gpu_check.py prepare`)")
    config = json.loads(config_path.read_text())
    devices = parse_devices(args.devices)
    bundles = [b for b in config["bundles"] if b["device"] in devices]
    if not bundles:
        print(f"{SUMMARY}passed=0 failed=0 (no {'/'.join(devices)} bundles in {base})")
        return 2
    _module_from(base / "parity.py", "gpu_check_parity")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as temp:
        tmp = Path(temp)
        bad = _unpack_blobs(base, bundles, tmp / "blobs")
        if bad:
            raise Refusal(f"{len(bad)} blobs are missing or do not match their sha256 (first {bad[0]})")
        runtime = _extract_runtime(base / RUNTIME_TAR, tmp / "runtime")
        runner = Runner(base, runtime, config["runtime"]["ffi"], started + args.deadline_s, args.run_s)
        outcomes = []
        for bundle in bundles:
            outcome = check_bundle(bundle, config, base, tmp, runner)
            print(outcome.line(), flush=True)
            outcomes.append(outcome)
    failed = sum(not o.passed for o in outcomes)
    print(f"{SUMMARY}passed={len(outcomes) - failed} failed={failed} devices={','.join(devices)} "
          f"seconds={time.monotonic() - started:.0f}")  # fmt: skip
    return 1 if failed else 0


# --------------------------------------------------------------------------- vm


def vm(args: argparse.Namespace) -> int:
    """Import the carried TVM runtime-only, load the device's runtime, run vm_script."""
    import ctypes
    import runpy

    runtime = Path(args.runtime).resolve()
    lib = runtime / "tvm" / "lib"
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    os.environ["TVM_DEVICE_BACKEND_AUTOLOAD"] = "0"
    sys.path.insert(0, str(runtime))
    try:
        ffi = importlib.import_module("tvm_ffi")
    except ImportError as e:
        sys.exit(f"no tvm_ffi for this Python ({sys.version.split()[0]}): install the carried wheel ({e})")
    version = getattr(ffi, "__version__", "?")
    if args.ffi and version != args.ffi:
        sys.exit(f"tvm_ffi {version} is here, the carried TVM runtime was built for {args.ffi}")
    tvm = importlib.import_module("tvm")
    loaded = Path(tvm.base._LOADED_LIBS["tvm_runtime"]._name).resolve()
    if loaded.parent != lib or not tvm.base._RUNTIME_ONLY:
        sys.exit(f"TVM loaded {loaded} (runtime-only: {tvm.base._RUNTIME_ONLY}), not the carried runtime in {lib}")
    for name in ("tvm_runtime_extra", *SIDECARS[args.device]):
        path = lib / f"lib{name}.so"
        try:
            tvm.base._LOADED_LIBS[name] = ctypes.CDLL(str(path), ctypes.RTLD_LOCAL)
        except OSError as e:
            if name != "tvm_runtime_extra":
                sys.exit(f"cannot load {path.name} for {args.device}: {e}")
    if not hasattr(tvm, "relax"):
        relax = types.ModuleType("tvm.relax")
        relax.VirtualMachine = importlib.import_module("tvm.runtime.vm").VirtualMachine  # type: ignore[attr-defined]
        sys.modules["tvm.relax"] = relax
        setattr(tvm, "relax", relax)  # noqa: B010
    info = {"tvm": str(tvm.__version__), "ffi": version, "runtime": str(loaded), "python": sys.version.split()[0]}
    print("GPU-CHECK-TVM " + json.dumps(info), file=sys.stderr, flush=True)
    script, *rest = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")
    return 0


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the folder to carry (here)")
    p.add_argument("--dist", required=True, help="a factory build's --out folder")
    p.add_argument("--work", required=True, help="that build's --work folder (parity tokens and references)")
    p.add_argument("--out", required=True, help="the folder to write (replaced if gpu_check.py wrote it before)")
    p.add_argument("--devices", default=",".join(DEFAULT_DEVICES), help="bundles of these devices (cuda,vulkan,cpu)")
    p.add_argument("--image", help="the toolchain image to take TVM's runtime from (default: the bundles')")
    p.add_argument("--ffi-wheel", help="the apache-tvm-ffi wheel for --python (default: pip download)")
    p.add_argument("--python", default="3.12", help="the check machine's Python (for the tvm-ffi wheel)")
    p.add_argument("--debs", help="a folder of .deb files to carry (the Vulkan loader)")
    p.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help="refuse a folder larger than this")
    p.add_argument("--smoke-tokens", type=int, default=32, help="tokens the smoke run decodes")
    p.add_argument("--run-rel", help="the folder's path from the repository root, for the printed command")
    p.add_argument("--cuda-s", type=int, default=200, help="run.sh: the CUDA check's deadline")
    p.add_argument("--vulkan-s", type=int, default=260, help="run.sh: the Vulkan check's deadline")
    c = sub.add_parser("check", help="run and compare the bundles (there)")
    c.add_argument("--dir", required=True)
    c.add_argument("--devices", default=",".join(DEFAULT_DEVICES))
    c.add_argument("--deadline-s", type=float, default=420, help="stop starting runs after this many seconds")
    c.add_argument("--run-s", type=float, default=180, help="the longest one vm_script run may take")
    v = sub.add_parser("vm", help="(internal) run vm_script with the carried runtime-only TVM")
    v.add_argument("--runtime", required=True)
    v.add_argument("--device", required=True, choices=sorted(SIDECARS))
    v.add_argument("--ffi", default="")
    v.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            return prepare(args)
        if args.command == "check":
            return check(args)
        return vm(args)
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


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


if __name__ == "__main__":
    sys.exit(main())
