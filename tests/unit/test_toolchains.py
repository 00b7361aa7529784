from __future__ import annotations

import json

import pytest

from factory.manifest.model import BuildOptions, Model, Target
from factory.toolchains import FLOWS, Unsupported

LEGACY = FLOWS["legacy"]
CURRENT = FLOWS["current"]


def target(device: str | dict[str, object], **kw: object) -> Target:
    fields: dict[str, object] = {"device": device, "runner": "container", "os": "linux", **kw}
    return Target.model_validate(fields)


def test_legacy_cuda_gets_an_explicit_target_so_no_gpu_is_probed() -> None:
    answer = LEGACY.target_argument(target({"kind": "cuda"}))
    assert isinstance(answer, Unsupported) and "probe" in answer.message


def test_legacy_cuda_targets_carry_what_dlight_gemv_reads() -> None:
    """A bare "cuda -arch=sm_80" lacks max_shared_memory_per_block, which the GEMV
    rule of the legacy build reads for CUDA: A100/H100 get TVM's tags, other archs
    a string with every limit, and a device's own values win."""
    assert LEGACY.target_argument(target({"kind": "cuda", "arch": "sm_80"})) == "nvidia/nvidia-a100"
    assert LEGACY.target_argument(target({"kind": "cuda", "arch": "sm_90"})) == "nvidia/nvidia-h100"
    ada = LEGACY.target_argument(target({"kind": "cuda", "arch": "sm_89"}))
    assert ada == (
        "cuda -arch=sm_89 -max_shared_memory_per_block=49152 -max_threads_per_block=1024"
        " -registers_per_block=65536 -thread_warp_size=32"
    )
    own = LEGACY.target_argument(target({"kind": "cuda", "arch": "sm_80", "max_shared_memory_per_block": 1024}))
    assert isinstance(own, str) and "-max_shared_memory_per_block=1024" in own and "-arch=sm_80" in own
    for arch in ("sm_80", "sm_86", "sm_90"):
        argument = LEGACY.target_argument(target({"kind": "cuda", "arch": arch}))
        assert isinstance(argument, str)
        assert argument.startswith("nvidia/") or "-max_shared_memory_per_block=" in argument


@pytest.mark.parametrize("name", ["RWKV-4-world-3b", "my-rwkv-4-world", "rwkv4-world-3b", "rwkv-4-3b"])
def test_legacy_model_names_start_with_rwkv_dash_and_contain_world(name: str) -> None:
    answer = LEGACY.check_model(_model(name, "rwkv4-world"))
    if name.lower().startswith("rwkv-") and "world" in name.lower():
        assert answer is None
    else:
        assert isinstance(answer, Unsupported) and "'rwkv-'" in answer.message


def test_legacy_model_name_rule_accepts_the_world_matrix() -> None:
    assert LEGACY.check_model(_model("rwkv-4-world-1b5", "rwkv4-world")) is None


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
    # The current flow builds RWKV-4 only with the factory's port (a toolchain patch the manifest check asks for).
    rwkv4 = CURRENT.model_quantizations("rwkv4-world")
    assert rwkv4 is not None and "q4f16_ft" not in rwkv4 and "q4f32_1" in rwkv4
    rwkv6 = CURRENT.model_quantizations("rwkv6-world")
    assert rwkv6 is not None and "q4f16_ft" not in rwkv6 and "q4f16_1" in rwkv6


def _model(name: str, type_: str) -> Model:
    return Model.model_validate(
        {"name": name, "hf": {"repo": "RWKV/x"}, "type": type_, "toolchain": "t", "context_window": 2048}
    )


BUILD = BuildOptions(cuda=True, cublas=True, cutlass=True, metal=True)


def test_legacy_argv_follows_the_pinned_build_cli() -> None:
    model = _model("rwkv-4-world-1b5", "rwkv4-world")
    (convert,) = LEGACY.convert_steps(model, "q4f16_1", "huggingface-safetensor")
    assert convert.argv == (
        "python", "-m", "mlc_llm.build", "--model", "/in/model/rwkv-4-world-1b5", "--quantization", "q4f16_1",
        "--target", "llvm", "--artifact-path", "/out", "--use-cache", "0", "--convert-weights-only",
        "--use-safetensors",
    )  # fmt: skip
    sm80 = Target(device={"kind": "cuda", "arch": "sm_80"}, runner="container", os="linux")
    (q0,) = LEGACY.compile_steps(model, "q0f16", "cuda-sm80", sm80, BUILD)
    assert q0.argv[q0.argv.index("--target") + 1] == "nvidia/nvidia-a100"
    assert q0.argv[-4:] == ("--build-model-only", "--no-cutlass-attn", "--no-cutlass-norm", "--no-cublas")
    (q4,) = LEGACY.compile_steps(model, "q4f16_1", "cuda-sm80", sm80, BUILD)
    assert "--no-cublas" not in q4.argv
    metal = Target(device="metal:generic", runner="host", os="macos", arch="arm64")
    (m,) = LEGACY.compile_steps(model, "q4f16_1", "metal-arm64", metal, BUILD)
    assert "--no-cutlass-attn" not in m.argv and m.argv[m.argv.index("--target") + 1] == "metal"
    assert LEGACY.converted_params("rwkv-4-world-1b5", "q4f16_1") == "rwkv-4-world-1b5-q4f16_1/params"
    assert LEGACY.compiled_library("m", "q4f16_1", "cuda-sm80", sm80) == "m-q4f16_1/m-q4f16_1-cuda.so"


def test_current_argv_follows_the_pinned_cli() -> None:
    model = _model("rwkv-6-world-3b", "rwkv6-world")
    convert, gen_config = CURRENT.convert_steps(model, "q4f16_1", "huggingface-torch")
    assert convert.argv == (
        "mlc_llm", "convert_weight", "/in/model/rwkv-6-world-3b", "--quantization", "q4f16_1", "--model-type",
        "rwkv6", "--device", "cpu", "--source", "/in/model/rwkv-6-world-3b", "--source-format", "huggingface-torch",
        "--output", "/out",
    )  # fmt: skip
    assert gen_config.argv == (
        "mlc_llm", "gen_config", "/in/model/rwkv-6-world-3b", "--quantization", "q4f16_1", "--model-type", "rwkv6",
        "--conv-template", "rwkv_world", "--context-window-size", "2048", "--tensor-parallel-shards", "1",
        "--output", "/out",
    )  # fmt: skip
    sm90 = Target(device={"kind": "cuda", "arch": "sm_90"}, runner="container", os="linux")
    (compile_,) = CURRENT.compile_steps(model, "q4f16_1", "cuda-sm90", sm90, BUILD)
    assert compile_.argv == (
        "mlc_llm", "compile", "/in/converted/mlc-chat-config.json", "--quantization", "q4f16_1", "--model-type",
        "rwkv6", "--device", '{"arch":"sm_90","kind":"cuda"}', "--host", "x86_64-unknown-linux-gnu",
        "--output", "/out/rwkv-6-world-3b-q4f16_1-cuda-sm90.so",
    )  # fmt: skip
    assert compile_.env == {}
    # A toolchain without cuBLAS/CUTLASS (the TVM wheel) keeps O2's offloads off, so q0 compiles.
    wheel = BuildOptions(cuda=True, cublas=False, cutlass=False)
    (bare,) = CURRENT.compile_steps(model, "q0f16", "cuda-sm90", sm90, wheel)
    assert bare.argv[bare.argv.index("--opt") + 1] == (
        "flashinfer=0;cublas_gemm=0;faster_transformer=0;cudagraph=1;cutlass=0"
    )
    cpu = Target(device={"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu", "mcpu": "x86-64"},
                 runner="container", os="linux")  # fmt: skip
    (on_cpu,) = CURRENT.compile_steps(model, "q4f16_1", "cpu", cpu, wheel)
    assert "--opt" not in on_cpu.argv
    # The CPU target is its own host: compile would otherwise build the kernels for --host's
    # generic triple, whatever mcpu the target names.
    assert isinstance(cpu.device, dict)
    assert json.loads(on_cpu.argv[on_cpu.argv.index("--device") + 1]) == {**cpu.device, "host": cpu.device}
    mac = Target(device="metal:generic", runner="host", os="macos", arch="arm64")
    (on_mac,) = CURRENT.compile_steps(model, "q4f16_1", "metal", mac, BUILD)
    assert on_mac.argv[on_mac.argv.index("--host") + 1] == "arm64-apple-darwin"


def test_cuda_multi_arch_is_a_fatbin_in_the_current_flow_only() -> None:
    model = _model("rwkv-5-world-3b", "rwkv5-world")
    fat = Target(device={"kind": "cuda", "arch": ["sm_80", "sm_90a"]}, runner="container", os="linux")
    (compile_,) = CURRENT.compile_steps(model, "q4f16_1", "cuda-fat", fat, BUILD)
    assert compile_.argv[compile_.argv.index("--device") + 1] == '{"arch":"sm_80","kind":"cuda"}'
    assert compile_.env == {"MLC_MULTI_ARCH": "80,90a"}
    assert isinstance(LEGACY.target_argument(fat), Unsupported)
