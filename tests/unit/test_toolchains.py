from __future__ import annotations

import json

import pytest

from factory.manifest.model import Target
from factory.toolchains import FLOWS, Unsupported

LEGACY = FLOWS["legacy"]
CURRENT = FLOWS["current"]


def target(device: str | dict[str, object], **kw: object) -> Target:
    fields: dict[str, object] = {"device": device, "runner": "container", "os": "linux", **kw}
    return Target.model_validate(fields)


def test_legacy_cuda_gets_a_full_target_string_so_no_gpu_is_probed() -> None:
    assert LEGACY.target_argument(target({"kind": "cuda", "arch": "sm_80"})) == "cuda -arch=sm_80"
    answer = LEGACY.target_argument(target({"kind": "cuda"}))
    assert isinstance(answer, Unsupported) and "probe" in answer.message


def test_legacy_presets_use_the_old_spelling() -> None:
    assert LEGACY.target_argument(target("metal:generic", runner="host", os="macos", arch="arm64")) == "metal"
    assert LEGACY.target_argument(target("vulkan:generic")) == "vulkan"
    assert isinstance(LEGACY.target_argument(target("webgpu:generic")), Unsupported)


def test_current_flow_takes_json_dicts_and_presets() -> None:
    arg = CURRENT.target_argument(target({"kind": "cuda", "arch": "sm_90"}))
    assert isinstance(arg, str) and json.loads(arg) == {"kind": "cuda", "arch": "sm_90"}
    assert CURRENT.target_argument(target("metal:generic")) == "metal:generic"


@pytest.mark.parametrize("device", ["auto", "cuda", "metal", "vulkan", "cpu"])
def test_current_flow_rejects_probing_devices(device: str) -> None:
    answer = CURRENT.target_argument(target(device))
    assert isinstance(answer, Unsupported) and "probes a local GPU" in answer.message


def test_library_names_follow_each_generation() -> None:
    cuda = target({"kind": "cuda", "arch": "sm_80"})
    assert LEGACY.library_name("rwkv-4-world-3b", "q4f16_1", "cuda-sm80", cuda) == "rwkv-4-world-3b-q4f16_1-cuda.so"
    metal = target("metal:generic", runner="host", os="macos", arch="arm64")
    assert LEGACY.library_name("m", "q0f16", "metal-arm64", metal) == "m-q0f16-metal.so"
    assert CURRENT.library_name("m", "q0f16", "metal-arm64", metal) == "m-q0f16-metal-arm64.dylib"
    assert CURRENT.library_name("m", "q0f16", "cuda-sm80", cuda) == "m-q0f16-cuda-sm80.so"


def test_params_index_names_per_generation() -> None:
    assert LEGACY.params_index == "ndarray-cache.json"
    assert CURRENT.params_index == "tensor-cache.json"


def test_model_type_support() -> None:
    assert LEGACY.model_quantizations("rwkv4-world") is not None
    assert LEGACY.model_quantizations("rwkv5-world") is None
    assert CURRENT.model_quantizations("rwkv4-world") is None
    rwkv6 = CURRENT.model_quantizations("rwkv6-world")
    assert rwkv6 is not None and "q4f16_ft" not in rwkv6 and "q4f16_1" in rwkv6
