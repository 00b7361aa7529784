"""The TVM runtime the GPU check's folder carries (bench/gpu_check.py `prepare`, here): the
runtime-only apache-tvm exported from the bundles' toolchain image, and the apache-tvm-ffi
wheel of the image's version for the check machine's Python."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from gpu_check_shared import Refusal

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
