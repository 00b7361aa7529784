"""The real wheel toolchain for the `mlc` tests: mlc-llm 79d603f0's Python package on
apache-tvm 0.26 from PyPI, built from manifests/world.yaml's own toolchain entry,
offline from a wheelhouse, with the mlc-llm source from ../shared/third_party/."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.docker import BASE_IMAGE, download_wheelhouse

REPO = Path(__file__).resolve().parents[2]
WHEEL_MANIFEST = REPO / "manifests" / "world.yaml"
LOCK = REPO / "images" / "wheel" / "requirements.lock"
WHEELHOUSE = Path(os.environ.get("FACTORY_TEST_WHEEL_WHEELHOUSE", REPO / ".cache" / "wheelhouse-wheel"))
# PyTorch's CPU build is not on PyPI; machines of this project's kind keep it here.
LOCAL_WHEELS = Path("/opt/wheels")
THIRD_PARTY = REPO.parent / "shared" / "third_party"
MLC_SOURCE = Path(os.environ.get("FACTORY_MLC_LLM_SOURCE", THIRD_PARTY / "mlc-llm-79d603f0-python.tar.gz"))
# The wheel's own TVM commit and its tvm-ffi submodule, which the image builds Vulkan and
# the web runtime from, and mlc-llm's web/ at its commit (its wasm runtime object).
TVM_SOURCES = {
    "FACTORY_TVM_SOURCE": Path(
        os.environ.get("FACTORY_TVM_SOURCE", THIRD_PARTY / "apache-tvm-v0.26.0-c7b458e9-src.tar.gz")
    ),
    "FACTORY_TVM_FFI_SOURCE": Path(
        os.environ.get("FACTORY_TVM_FFI_SOURCE", THIRD_PARTY / "apache-tvm-ffi-12dbf053-src.tar.gz")
    ),
    "FACTORY_MLC_LLM_WEB_SOURCE": Path(
        os.environ.get("FACTORY_MLC_LLM_WEB_SOURCE", THIRD_PARTY / "mlc-llm-79d603f0-web.tar.gz")
    ),
}
TOOLCHAIN = "wheel-tvm0.26"


def ensure_wheel_wheelhouse() -> Path:
    """Every wheel of images/wheel/requirements.lock, hash-checked, from PyPI and the local CPU torch."""
    extra = ("--platform", "linux_x86_64", "--find-links", str(LOCAL_WHEELS), "--require-hashes")
    return download_wheelhouse(LOCK, WHEELHOUSE, *extra)


def mlc_source_or_fail() -> Path:
    if not MLC_SOURCE.is_file():
        message = f"no mlc-llm source archive at {MLC_SOURCE} (set FACTORY_MLC_LLM_SOURCE)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return MLC_SOURCE


def sources_env() -> dict[str, str]:
    """The environment that gives `factory images build` every source archive offline."""
    env = {"FACTORY_MLC_LLM_SOURCE": str(mlc_source_or_fail())}
    for name, path in TVM_SOURCES.items():
        if not path.is_file():
            message = f"no TVM source archive at {path} (set {name})"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        env[name] = str(path)
    return env


def wheel_manifest(
    models: list[dict[str, Any]], quants: list[str], targets: list[str], name: str = "wheel-test"
) -> dict[str, Any]:
    """manifests/world.yaml's wheel toolchain and targets (the release's own), with the tests'
    models and the local base image."""
    data = copy.deepcopy(yaml.safe_load(WHEEL_MANIFEST.read_text()))
    data["root"] = str(REPO)
    data["release"] = {"name": name, "version": "0.0.1"}
    data["toolchains"] = {TOOLCHAIN: {**data["toolchains"][TOOLCHAIN], "base_image": BASE_IMAGE}}
    data["models"] = [{"toolchain": TOOLCHAIN, **m} for m in models]
    data["quantizations"] = quants
    data["targets"] = {t: data["targets"][t] for t in targets}
    data.pop("matrix", None)
    assert isinstance(data, dict)
    return data
