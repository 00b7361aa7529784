"""Gates on bundles made here with TVM's own writer: layout lint, params, library, smoke."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from factory.cells import gates
from factory.store.bundle_folder import CHAT_CONFIG, TOKENIZER, describe, role_of

LIB = "m-q4f16_1-cuda.so"


def _bundle(tmp_path: Path, *, nan: bool = False, vocab: int = 256) -> Path:
    from tvm.contrib import tvmjs

    bundle = tmp_path / "bundle"
    params = bundle / "params"
    rng = np.random.default_rng(0)
    tensors = {
        "embeddings.q_weight": rng.integers(0, 2**31, (vocab, 8), dtype="uint32"),
        "embeddings.q_scale": rng.standard_normal((vocab, 2)).astype("float16"),
        "ln_out.weight": np.ones(64, "float16"),
        "blocks.0.att.key.q_weight": rng.integers(0, 2**31, (4096, 256), dtype="uint32"),
    }
    if nan:
        tensors["ln_out.weight"][7] = np.nan
    tvmjs.dump_tensor_cache(tensors, str(params), encode_format="raw", shard_cap_mb=1, show_progress=False)
    (params / "tensor-cache.json").rename(params / "ndarray-cache.json")
    (params / "tensor-cache-b16.json").unlink(missing_ok=True)
    config = {"model_category": "rwkv_world", "vocab_size": 256, "tokenizer_files": [TOKENIZER]}
    (params / CHAT_CONFIG).write_text(json.dumps(config))
    (params / TOKENIZER).write_bytes(b"\x80")
    (bundle / LIB).write_bytes(b"not really a library")
    return bundle


def _lint(bundle: Path, library: str = LIB, suffix: str = "so") -> gates.GateResult:
    return gates.lint_layout(
        bundle, params_dir="params", params_index="ndarray-cache.json", library_name=library, library_suffix=suffix
    )


def test_a_complete_bundle_passes_the_layout_lint(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    assert _lint(bundle).status == "passed"
    assert len(list((bundle / "params").glob("params_shard_*.bin"))) > 1


def test_a_missing_shard_fails_the_layout_lint_naming_it(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    shard = bundle / "params" / "params_shard_1.bin"
    shard.unlink()
    result = _lint(bundle)
    assert result.failed
    assert result.problems == (f"{shard}: listed in ndarray-cache.json but missing",)


def test_a_short_shard_fails_the_layout_lint(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    shard = bundle / "params" / "params_shard_0.bin"
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:-10])
    result = _lint(bundle)
    assert result.problems == (f"{shard}: {size - 10} bytes, ndarray-cache.json says {size}",)


def test_missing_tokenizer_and_a_wrong_suffix_fail_the_layout_lint(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    (bundle / "params" / TOKENIZER).unlink()
    (bundle / LIB).rename(bundle / "m.dylib")
    result = _lint(bundle, library="m.dylib", suffix="so")
    assert any("listed in tokenizer_files but missing" in p for p in result.problems)
    assert any("must end in .so" in p for p in result.problems)


def test_params_are_read_with_tvm_and_pass(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    config = json.loads((bundle / "params" / CHAT_CONFIG).read_text())
    result = gates.check_params(
        bundle / "params", params_index="ndarray-cache.json", chat_config=config, quantization="q4f16_1"
    )
    assert result.status == "passed", result.problems
    assert result.details["tensors"] == 4


def test_nan_params_fail_with_the_hint(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, nan=True)
    config = json.loads((bundle / "params" / CHAT_CONFIG).read_text())
    hint = gates.nan_hint("rwkv-4-world-1b5", "rwkv4-world", "q4f16_1")
    result = gates.check_params(
        bundle / "params", params_index="ndarray-cache.json", chat_config=config, quantization="q4f16_1", nan_hint=hint
    )
    assert result.failed
    assert result.problems == ("ln_out.weight: 1 NaN/Inf values",)
    assert "first_layer_fp32" in result.hint


def test_params_that_disagree_with_the_config_fail(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, vocab=128)
    config = json.loads((bundle / "params" / CHAT_CONFIG).read_text())
    result = gates.check_params(
        bundle / "params", params_index="ndarray-cache.json", chat_config=config, quantization="q4f32_1"
    )
    assert "embeddings.q_weight: 128 rows, but vocab_size is 256" in result.problems
    assert "embeddings.q_scale: float16, but q4f32_1 stores float32" in result.problems
    # RWKV keeps 1-D parameters such as the GroupNorm and time decay in float32 under any quantization.
    assert not any(p.startswith("ln_out.weight") for p in result.problems)


def test_storage_dtypes_follow_the_quantization_name() -> None:
    assert gates._storage_dtype("q4bf16_1") == "bfloat16" and gates._storage_dtype("q0bf16") == "bfloat16"
    assert gates._storage_dtype("q4f16_1") == "float16" and gates._storage_dtype("q4f32_1") == "float32"
    ln_x = {"dtype": "float32", "shape": [64]}
    assert not gates._holds_model_dtype("model.blocks.0.attention.ln_x.weight", ln_x)
    assert gates._holds_model_dtype("head.q_scale", {"dtype": "float16", "shape": [65536, 2]})
    decay = {"dtype": "float32", "shape": [1, 64]}  # 2-D, and float32 in every RWKV-5 quantization
    assert not gates._holds_model_dtype("model.blocks.0.attention.time_decay", decay)
    assert gates._holds_model_dtype("model.embeddings.weight", {"dtype": "float32", "shape": [8, 64]})


def test_a_library_that_does_not_load_here_is_not_run_not_passed(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    result = gates.check_library(bundle / LIB, chat_config={}, quantization="q4f16_1", records=[])
    assert result.status == "not-run" and not result.failed
    assert "cannot load on this host" in result.details["reason"]


def test_library_metadata_is_compared_with_config_and_params(tmp_path: Path) -> None:
    import tvm
    from tvm import relax
    from tvm.relax.frontend import nn

    class Probe(nn.Module):  # type: ignore[misc]
        def forward(self, x: nn.Tensor) -> nn.Tensor:
            return x + x

    mod, _ = Probe().export_tvm(spec={"forward": {"x": nn.spec.Tensor((2,), "float32")}})
    meta = {
        "model_type": "rwkv5",
        "quantization": "q4f16_1",
        "params": [{"name": "w", "shape": [4], "dtype": "float16"}],
    }
    builder = relax.BlockBuilder(mod)
    with builder.function("_metadata", params=[]):
        builder.emit_func_output(relax.expr.String(json.dumps(meta)))
    library = tmp_path / "lib.so"
    tvm.compile(builder.get(), target="llvm").export_library(str(library))
    good = gates.check_library(
        library,
        chat_config={"model_type": "rwkv5"},
        quantization="q4f16_1",
        records=[{"name": "w", "shape": [4], "dtype": "float16"}],
    )
    assert good.status == "passed"
    bad = gates.check_library(
        library,
        chat_config={"model_type": "rwkv6"},
        quantization="q4f32_1",
        records=[{"name": "w", "shape": [8], "dtype": "float16"}],
    )
    assert bad.failed
    assert len(bad.problems) == 3


def test_smoke_figures_are_judged() -> None:
    lines = ["loading", 'FACTORY-SMOKE {"output": "RWKV is an RNN.", "prefill_tok_s": 362.7, "decode_tok_s": 72.4}']
    figures = gates.parse_smoke(lines)
    assert figures is not None
    passed = gates.judge_smoke(figures, hint="h")
    assert passed.status == "passed"
    assert passed.details["prefill_tok_s"] == 362.7 and passed.details["decode_tok_s"] == 72.4
    nan = gates.parse_smoke(['FACTORY-SMOKE {"output": "x", "logprobs": [-0.1, "nan"]}'])
    assert nan is not None and math.isnan(nan.logprobs[1])
    assert gates.judge_smoke(nan, hint="try fp32").hint == "try fp32"
    empty = gates.parse_smoke(['FACTORY-SMOKE {"output": "  "}'])
    assert empty is not None and gates.judge_smoke(empty, hint="h").problems == ("the model produced no output",)
    assert gates.parse_smoke(["no figures"]) is None


@pytest.mark.parametrize(
    ("path", "role"),
    [
        (LIB, "library"),
        ("params/ndarray-cache.json", "params-index"),
        ("params/params_shard_3.bin", "params-shard"),
        ("params/mlc-chat-config.json", "chat-config"),
        ("params/tokenizer_model", "tokenizer"),
    ],
)
def test_bundle_file_roles(path: str, role: str) -> None:
    assert role_of(path, "ndarray-cache.json", LIB) == role


def test_describe_lists_every_file_with_its_sha256(tmp_path: Path) -> None:
    import hashlib

    bundle = _bundle(tmp_path)
    files = describe(bundle, "ndarray-cache.json", LIB)
    assert {f.path for f in files} == {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    for f in files:
        assert f.sha256 == hashlib.sha256((bundle / f.path).read_bytes()).hexdigest()


CUDA_SOURCE_ONLY = """
import sys
import tvm
from tvm.script import tirx as T

@T.prim_func
def add(a: T.Buffer((64,), "float32"), b: T.Buffer((64,), "float32")):
    T.func_attr({"global_symbol": "add", "tirx.noalias": True})
    for i in T.thread_binding(64, thread="threadIdx.x"):
        b[i] = a[i] + T.float32(1.0)

target = tvm.target.Target({"kind": "cuda", "arch": "sm_80"}, host="llvm")
tvm.compile(tvm.IRModule({"add": add}), target=target).export_library(sys.argv[1])
"""


def test_a_cuda_library_that_kept_its_source_fails_the_library_gate(tmp_path: Path) -> None:
    """Real TVM on a host without libcuda.so.1 (this one) "compiles" CUDA without running
    nvcc: the library keeps CUDA C source, and no GPU can load it. The gate says so."""
    import subprocess
    import sys

    script, library = tmp_path / "compile.py", tmp_path / "kernel.so"
    script.write_text(CUDA_SOURCE_ONLY)
    subprocess.run([sys.executable, str(script), str(library)], check=True, capture_output=True)
    problem = gates.cuda_code_problem(library)
    assert problem is not None and "nvcc never ran" in problem
    # A library with a fatbin container in it is not flagged.
    fat = tmp_path / "fat.so"
    fat.write_bytes(library.read_bytes().replace(b"__global__", b"__device__") + b"\x50\xed\x55\xba")
    assert gates.cuda_code_problem(fat) is None
