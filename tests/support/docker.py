"""A real Docker engine for the `docker` tests, and the conformance toolchain image.

CI (`.ci/run`) installs docker.io and debootstrap, starts dockerd and makes the
base image. Run by hand without an engine, the docker tests skip; with
CI=true they fail instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "factory-test/debian-python:bookworm"
CONFORMANCE = REPO / "tests" / "toolchains" / "conformance"
WHEELHOUSE = Path(os.environ.get("FACTORY_TEST_WHEELHOUSE", REPO / ".cache" / "wheelhouse"))


def engine_or_skip() -> Any:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except DockerException as exc:
        message = f"no Docker engine ({type(exc).__name__}); .ci/run starts one"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return client


def ensure_base_image(client: Any) -> str:
    from docker.errors import ImageNotFound

    try:
        client.images.get(BASE_IMAGE)
    except ImageNotFound:
        subprocess.run(["bash", str(REPO / "tests" / "support" / "make-base-image.sh"), BASE_IMAGE], check=True)
    return BASE_IMAGE


def ensure_wheelhouse() -> Path:
    """The wheels the conformance image installs offline, from PyPI (an allowed registry)."""
    return download_wheelhouse(CONFORMANCE / "requirements.txt", WHEELHOUSE)


def download_wheelhouse(requirements: Path, dest: Path, *extra: str) -> Path:
    """Linux x86_64 / Python 3.11 wheels for `requirements` in `dest`, fetched again only
    when the requirements file changed (a stamp keeps its last content)."""
    wanted = requirements.read_text()
    stamp = dest / ".requirements"
    if not (stamp.is_file() and stamp.read_text() == wanted):
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
                "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                *extra, "-d", str(dest), "-r", str(requirements),
            ],
            check=True,
        )  # fmt: skip
        stamp.write_text(wanted)
    return dest


def conformance_context(dest: Path, salt: str = "") -> Path:
    """A copy of the conformance toolchain's context; a salt makes its tag unique."""
    shutil.copytree(CONFORMANCE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    if salt:
        (dest / "salt").write_text(salt)
    return dest


def toolchain_manifest(
    root: Path, *, flow: str = "current", context: str = "conformance", patches: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A one-toolchain manifest whose image is the conformance toolchain under root/context."""
    pins = {
        "legacy": ("f06d486b4a1a27f0bbb072688a5fc41e7b15323c", "b44cdc53381bd804ef000775bb280de1c7ca6439"),
        "current": ("b628d91fac716679db539884a55f8c6651f54dea", "bb586e51eb20cba2e82216b75d22d8dd6657cce1"),
    }[flow]
    model_type = "rwkv4-world" if flow == "legacy" else "rwkv5-world"
    return {
        "manifest_version": 1,
        "root": ".",
        "release": {"name": "test", "version": "0.0.1"},
        "toolchains": {
            "conformance": {
                "flow": flow,
                "tvm": {"repo": "https://github.com/mlc-ai/relax", "commit": pins[0]},
                "mlc_llm": {"repo": "https://github.com/mlc-ai/mlc-llm", "commit": pins[1]},
                "build": {"cuda": True},
                "cuda_version": "12.8",
                "base_image": BASE_IMAGE,
                "patches": [{"path": p} for p in patches],
                "image": {"dockerfile": f"{context}/Dockerfile", "context": context},
            }
        },
        "models": [
            {
                "name": "rwkv-world-tiny",
                "hf": {"repo": "factory-tests/rwkv-world-tiny"},
                "type": model_type,
                "toolchain": "conformance",
            }
        ],
        "quantizations": ["q4f16_1"],
        "targets": {"cuda-sm80": {"device": {"kind": "cuda", "arch": "sm_80"}, "runner": "container", "os": "linux"}},
    }
