"""Gates a bundle passes before it is accepted: layout lint, params check,
library check, and (where a device exists) a smoke run.

Each gate returns a GateResult; a failed gate names the file and the fix.
Params are read with TVM's own tensor-cache reader, one shard at a time (the
reader loads everything it is given, so each shard gets its own small index).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.clients import client_records
from factory.errors import FactoryError

FLOAT_DTYPES = {"float16", "float32", "bfloat16", "float64"}
# The Relax VM runner's device (factory/in_toolchain/vm_script.py) per target kind it drives.
VM_DEVICES = {"llvm": "cpu", "cuda": "cuda", "vulkan": "vulkan"}


class GateFailure(FactoryError):
    """A bundle failed a gate. Exit code 4."""

    exit_code = 4


@dataclass(frozen=True)
class GateResult:
    gate: str
    status: str  # passed | failed | not-run (could not run here; never counts as a pass)
    problems: tuple[str, ...] = ()
    hint: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, **self.details}
        if self.problems:
            out["problems"] = list(self.problems)
        if self.hint:
            out["hint"] = self.hint
        return out


def lint_layout(
    bundle: Path, *, params_dir: str, params_index: str, library_name: str, library_suffix: str
) -> GateResult:
    params = bundle / params_dir if params_dir else bundle
    problems = []
    index_path = params / params_index
    if not index_path.is_file():
        problems.append(f"{index_path}: the params index is missing")
    else:
        for shard in json.loads(index_path.read_text()).get("records", []):
            shard_path = params / shard["dataPath"]
            if not shard_path.is_file():
                problems.append(f"{shard_path}: listed in {params_index} but missing")
            elif shard_path.stat().st_size != shard["nbytes"]:
                problems.append(
                    f"{shard_path}: {shard_path.stat().st_size} bytes, {params_index} says {shard['nbytes']}"
                )
    b16 = params / "tensor-cache-b16.json"
    if b16.is_file() and index_path.is_file():
        main_shards = sorted(r["dataPath"] for r in json.loads(index_path.read_text()).get("records", []))
        b16_shards = sorted(r["dataPath"] for r in json.loads(b16.read_text()).get("records", []))
        if b16_shards != main_shards:
            problems.append(f"{b16}: lists shards {b16_shards}, {params_index} lists {main_shards}")
    config_path = params / "mlc-chat-config.json"
    if not config_path.is_file():
        problems.append(f"{config_path}: missing")
    else:
        for name in json.loads(config_path.read_text()).get("tokenizer_files", []):
            if not (params / name).is_file():
                problems.append(f"{params / name}: listed in tokenizer_files but missing")
    library = bundle / library_name
    if not library.is_file():
        problems.append(f"{library}: the model library is missing")
    if not library_name.endswith("." + library_suffix):
        problems.append(f"{library_name}: a library for this target must end in .{library_suffix}")
    if problems:
        return GateResult("layout", "failed", tuple(problems), "rebuild the cell; a truncated copy is never accepted")
    return GateResult("layout", "passed")


def _shards(index_path: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """Each shard record with a one-shard index TVM's reader can load on its own."""
    index = json.loads(index_path.read_text())
    with tempfile.TemporaryDirectory(dir=index_path.parent, prefix=".gate-") as tmp:
        for number, shard in enumerate(index.get("records", [])):
            single = Path(tmp) / f"shard-{number}.json"
            single.write_text(
                json.dumps(
                    {"metadata": index.get("metadata"), "records": [{**shard, "dataPath": f"../{shard['dataPath']}"}]}
                )
            )
            yield shard, single


def check_params(
    params: Path, *, params_index: str, chat_config: Mapping[str, Any], quantization: str, nan_hint: str = ""
) -> GateResult:
    import numpy as np
    import tvm
    from tvm.contrib import tvmjs

    problems: list[str] = []
    non_finite: list[str] = []
    vocab = chat_config.get("vocab_size")
    storage = _storage_dtype(quantization)
    count = 0
    for shard, single in _shards(params / params_index):
        try:
            tensors, _ = tvmjs.load_tensor_cache(str(single), tvm.cpu())
        except (AssertionError, ValueError, OSError) as exc:
            problems.append(f"{params / shard['dataPath']}: TVM cannot read it ({type(exc).__name__}: {exc})")
            continue
        declared = {r["name"]: r for r in shard["records"]}
        for name, tensor in tensors.items():
            count += 1
            record = declared[name]
            array = tensor.numpy()
            if list(array.shape) != list(record["shape"]) or str(array.dtype) != record["dtype"]:
                problems.append(f"{name}: read as {array.dtype}{list(array.shape)}, index says {record['dtype']}")
            if "embed" in name and vocab is not None and array.shape[0] != vocab:
                problems.append(f"{name}: {array.shape[0]} rows, but vocab_size is {vocab}")
            if storage and _holds_model_dtype(name, record) and record["dtype"] != storage:
                problems.append(f"{name}: {record['dtype']}, but {quantization} stores {storage}")
            if record["dtype"] in FLOAT_DTYPES:
                finite = np.isfinite(array.astype("float32"))
                if not finite.all():
                    non_finite.append(f"{name}: {int((~finite).sum())} NaN/Inf values")
    if count == 0:
        problems.append(f"{params / params_index}: lists no tensors")
    details = {"tensors": count}
    if non_finite:
        hint = nan_hint or "the checkpoint or the conversion produced NaN/Inf; check the source weights"
        return GateResult("params", "failed", tuple(non_finite + problems), hint, details)
    if problems:
        return GateResult("params", "failed", tuple(problems), "rebuild the cell from a clean conversion", details)
    return GateResult("params", "passed", details=details)


def _storage_dtype(quantization: str) -> str:
    """The float type a quantization's weights and scales are kept in (q4bf16_1: bfloat16)."""
    for marker, dtype in (("bf16", "bfloat16"), ("f16", "float16"), ("f32", "float32")):
        if marker in quantization:
            return dtype
    return ""


def _holds_model_dtype(name: str, record: Mapping[str, Any]) -> bool:
    """Whether a tensor must be in the quantization's float type: quantization scales and
    2-D `.weight` matrices. RWKV keeps other parameters in float32 on purpose (time decay
    and first-token bonus, whatever their shape, and the attention GroupNorm)."""
    if record["dtype"] not in FLOAT_DTYPES:
        return False
    return name.endswith(".q_scale") or (name.endswith(".weight") and len(record["shape"]) == 2)


LIBRARY_MARK = "FACTORY-LIBRARY "
# A fatbin container's magic number (little-endian 0xBA55ED50), at the start of every
# fatbin nvcc writes; CUDA C source kept instead of it means nvcc never ran.
_FATBIN_MAGIC = b"\x50\xed\x55\xba"


def cuda_code_problem(library: Path) -> str | None:
    """PURE-ish (reads the file): why a CUDA library holds no compiled GPU code, or None.

    TVM compiles CUDA kernels with nvcc only when its CUDA runtime loads (it needs
    libcuda.so.1); otherwise export_library silently keeps the CUDA C source, and the
    library fails to load on every GPU later."""
    data = library.read_bytes()
    if b"__global__" in data and _FATBIN_MAGIC not in data:
        return (
            f"{library.name}: holds CUDA C source but no compiled GPU code (nvcc never ran; "
            "the toolchain needs libcuda.so.1 to load at compile time)"
        )
    return None


def parse_library(lines: Sequence[str]) -> dict[str, Any] | None:
    """PURE: what vm_script.py `library` printed (metadata, functions, device modules), or None."""
    for line in reversed(lines):
        if line.startswith(LIBRARY_MARK):
            data = json.loads(line[len(LIBRARY_MARK) :])
            return data if isinstance(data, dict) else None
    return None


# What each flow's runtime calls in an RWKV library: the current flow's RNN-state
# functions (mlc_llm/model/rwkv5|6 get_default_spec), the legacy flow's KV-cache ones
# (mlc_llm/relax_model/rwkv.py at b44cdc53).
REQUIRED_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "current": ("embed", "prefill", "decode", "create_rnn_state", "_metadata"),
    "legacy": ("prefill", "decode", "create_kv_cache", "softmax_with_temperature", "_metadata"),
}


def judge_library(
    library_name: str,
    metadata: Mapping[str, Any],
    *,
    chat_config: Mapping[str, Any],
    quantization: str,
    records: Sequence[Mapping[str, Any]],
    functions: Sequence[str] | None = None,
    flow: str = "current",
) -> GateResult:
    """PURE: the library's own `_metadata` (and exported functions, where known)
    against the config and the params."""
    problems = []
    # The legacy chat config has no quantization field; the cell says which it is.
    quant = quantization
    if metadata.get("quantization") not in (None, quant):
        problems.append(f"{library_name}: built for {metadata['quantization']}, params are {quant}")
    model_type = chat_config.get("model_type") or chat_config.get("model_category")
    if metadata.get("model_type") not in (None, model_type):
        problems.append(f"{library_name}: built for model type {metadata['model_type']}, config says {model_type}")
    expected = {r["name"]: (list(r["shape"]), r["dtype"]) for r in records}
    for param in metadata.get("params", []):
        name = param["name"]
        if name not in expected:
            problems.append(f"{library_name}: expects param {name}, which the params lack")
        elif expected[name] != (list(param["shape"]), param["dtype"]):
            shape, dtype = expected[name]
            problems.append(f"{name}: library wants {param['dtype']}{param['shape']}, params have {dtype}{shape}")
    details: dict[str, Any] = {"metadata_params": len(metadata.get("params", []))}
    details.update(client_records.memory_figures(metadata, chat_config))
    if functions is not None:
        details["functions"] = list(functions)
        missing = [f for f in REQUIRED_FUNCTIONS[flow] if f not in functions]
        if missing:
            problems.append(f"{library_name}: does not export {', '.join(missing)}")
    if problems:
        return GateResult("library", "failed", tuple(problems), "compile the library against these params again")
    return GateResult("library", "passed", details=details)


def check_library(
    library: Path, *, chat_config: Mapping[str, Any], quantization: str, records: Sequence[Mapping[str, Any]]
) -> GateResult:
    """judge_library on a library loaded by this process's TVM. Only a library for a
    device this host cannot load is "not-run"; a CPU library that does not load fails."""
    import tvm
    from tvm import relax

    try:
        module = tvm.runtime.load_module(str(library))
        vm = relax.VirtualMachine(module, tvm.cpu())
        raw = vm["_metadata"]()
    except Exception as exc:  # a loader or VM error: the caller decides what it means
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return not_run("library", f"cannot load on this host: {reason}")
    return judge_library(
        library.name, json.loads(str(raw)), chat_config=chat_config, quantization=quantization, records=records
    )


def not_run(gate: str, reason: str) -> GateResult:
    """A gate that could not run here: never a pass, and said so in the bundle and summary."""
    return GateResult(gate, "not-run", details={"reason": reason})


def index_records(index_path: Path) -> list[dict[str, Any]]:
    return [r for shard in json.loads(index_path.read_text()).get("records", []) for r in shard["records"]]


@dataclass(frozen=True)
class SmokeFigures:
    output: str
    prefill_tok_s: float | None
    decode_tok_s: float | None
    logprobs: tuple[float, ...] = ()
    finite: bool | None = None
    """The Relax VM runner's own verdict on every logit it saw (None: not reported)."""
    logits_shape: tuple[int, ...] | None = None
    vocab_size: int | None = None
    runtime: str = ""
    generated_tokens: tuple[int, ...] = ()
    device: str = ""


def judge_smoke(figures: SmokeFigures, *, hint: str) -> GateResult:
    """PURE: a smoke run's figures to a gate result, in the seed article's terms."""
    details: dict[str, Any] = {"prefill_tok_s": figures.prefill_tok_s, "decode_tok_s": figures.decode_tok_s}
    if figures.runtime:
        details["runtime"] = figures.runtime
    if figures.device:
        details["device"] = figures.device
    if figures.logits_shape is not None and figures.vocab_size is not None:
        details["logits_shape"] = list(figures.logits_shape)
        if list(figures.logits_shape) != [figures.vocab_size]:
            problem = f"logits have shape {list(figures.logits_shape)}, the vocab has {figures.vocab_size} tokens"
            return GateResult("smoke", "failed", (problem,), hint, details)
    if figures.finite is False or any(math.isnan(x) or math.isinf(x) for x in figures.logprobs):
        return GateResult("smoke", "failed", ("the logits contain NaN/Inf",), hint, details)
    if not figures.generated_tokens and not figures.output.strip():
        return GateResult("smoke", "failed", ("the model produced no output",), hint, details)
    if figures.generated_tokens:
        details["generated_tokens"] = list(figures.generated_tokens)
    return GateResult("smoke", "passed", details={**details, "output": figures.output[:200]})


SMOKE_MARK = "FACTORY-SMOKE "


# The strings the smoke script writes for non-finite floats (and the lower-case
# spellings older scripts wrote); accepted only where a number belongs.
NON_FINITE_NAMES = {"nan": math.nan, "inf": math.inf, "infinity": math.inf, "-inf": -math.inf, "-infinity": -math.inf}


def smoke_number(value: Any, field: str) -> float:
    """A number from the smoke line: a JSON number, or a non-finite float's name."""
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.lower() in NON_FINITE_NAMES:
        return NON_FINITE_NAMES[value.lower()]
    raise ValueError(f"{field}: expected a number or NaN/Infinity/-Infinity, got {value!r}")


def parse_smoke(lines: list[str] | tuple[str, ...]) -> SmokeFigures | None:
    """PURE: the figures the smoke script printed, or None if it printed none.

    A line that is not the script's JSON raises GateFailure naming the field."""
    for line in reversed(lines):
        if line.startswith(SMOKE_MARK):
            try:
                return _smoke_figures(line[len(SMOKE_MARK) :])
            except (ValueError, TypeError) as exc:
                raise GateFailure(
                    f"the smoke run printed an unreadable {SMOKE_MARK.strip()} line: {exc}",
                    hint="the smoke script and the factory disagree on its format; rebuild with one factory version",
                ) from None
    return None


def _smoke_figures(text: str) -> SmokeFigures:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")

    def number(name: str) -> float | None:
        value = data.get(name)
        return None if value is None else smoke_number(value, name)

    shape = data.get("logits_shape")
    vocab = data.get("vocab_size")
    finite = data.get("finite")
    return SmokeFigures(
        output=str(data.get("output") or ""),
        prefill_tok_s=number("prefill_tok_s"),
        decode_tok_s=number("decode_tok_s"),
        logprobs=tuple(smoke_number(x, f"logprobs[{i}]") for i, x in enumerate(data.get("logprobs") or ())),
        finite=finite if isinstance(finite, bool) else None,
        logits_shape=tuple(int(x) for x in shape) if isinstance(shape, list) else None,
        vocab_size=int(vocab) if isinstance(vocab, int) else None,
        runtime=str(data.get("runtime") or ""),
        generated_tokens=tuple(int(x) for x in data.get("generated_tokens") or ()),
        device=str(data.get("device") or ""),
    )


def no_device(target_kind: str, reason: str) -> GateResult:
    return not_run("smoke", f"no {target_kind} device on this host: {reason}")


def nan_hint(model_name: str, model_type: str, quant: str) -> str:
    if model_type == "rwkv4-world" and "f16" in quant:
        return (
            f"RWKV-4 World overflows in fp16 on some checkpoints (the 1.5B one does): set "
            f"models[{model_name}].overrides.float32_layers: 1 (its first layer in float32; the wheel "
            "toolchain's rwkv4-model.patch provides it; on the legacy flow first_layer_fp32 with a patch "
            "that provides it), or build it as q4f32_1"
        )
    return "the source checkpoint holds NaN/Inf, or the conversion overflowed; check the weights"
