"""The legacy flow: `python3 -m mlc_llm.build`, deleted upstream in 20efccb7.

Facts come from the recorded contract of mlc-llm b44cdc53 (the last commit
before the old flow was deprecated), contracts/<commit>.json, which names the
upstream file and line of each: the build CLI's flags, its quantization names,
the model-name rule, how targets are parsed, and the TVM target tags.
"""

from __future__ import annotations

from collections.abc import Mapping

from factory.manifest.model import BuildOptions, Model, ModelType, Target
from factory.toolchains.base import MODEL_ROOT, OUT, SourceFormat, StepArgv, Unsupported
from factory.toolchains.contract import legacy_contract

READ_AT = "b44cdc53381bd804ef000775bb280de1c7ca6439"
CONTRACT = legacy_contract(READ_AT)

# Every name `--quantization` accepts (the keys of quantization_schemes).
CLI_QUANTIZATIONS = CONTRACT.quantizations.all()

# Our choice, not an upstream table: relax_model/rwkv.py goes through the
# generic param manager, so no-quantization and group quantization apply; the
# autogptq schemes are llama-only and the FasterTransformer ones were only ever
# exercised on llama-family models.
_RWKV4_QUANTIZATIONS = frozenset(
    {"q0f16", "q0f32", "q3f16_0", "q3f16_1", "q4f16_0", "q4f16_1", "q4f16_2", "q4f32_0", "q4f32_1"}
)
assert _RWKV4_QUANTIZATIONS <= CLI_QUANTIZATIONS

# Presets whose target utils.parse_target builds without a local device, in the
# old spelling. Bare "cuda" probes the local GPU and fails without one, so CUDA
# always gets an explicit target (a TVM tag, or a string with every attribute).
_PRESET_SPELLING = {"metal:generic": "metal", "vulkan:generic": "vulkan"}
assert set(_PRESET_SPELLING.values()) <= set(CONTRACT.targets.presets)


class LegacyFlow:
    name = "legacy"
    read_at = READ_AT
    params_index = CONTRACT.params_index.name
    cli_quantizations = CLI_QUANTIZATIONS

    def model_quantizations(self, model_type: ModelType) -> frozenset[str] | None:
        return _RWKV4_QUANTIZATIONS if model_type == "rwkv4-world" else None

    def check_model(self, model: Model) -> Unsupported | None:
        # The CLI names the model after its folder, which is named after the model.
        # Only a name holding "rwkv" and "world" gets the rwkv_world category and
        # conversation template, and relax_model/rwkv.py refuses a name that does
        # not start with "rwkv-".
        rule = CONTRACT.model_name
        lowered = model.name.lower()
        if not lowered.startswith(rule.prefix) or not all(w in lowered for w in rule.world_words):
            return Unsupported(
                message=f"the legacy flow names the model after its folder; the name must start with "
                f"{rule.prefix!r} ({rule.prefix_source}) and contain "
                f"{' and '.join(map(repr, rule.world_words))} ({rule.world_source}); {model.name!r} does not",
                fix="rename the model, e.g. rwkv-4-world-1b5",
            )
        return None

    def target_argument(self, target: Target) -> str | Unsupported:
        device = target.device
        if isinstance(device, dict):
            kind = str(device["kind"])
            if kind not in ("cuda", "vulkan", "llvm"):
                return Unsupported(
                    message=f"the legacy flow cannot take a {kind!r} device as a target dict",
                    fix="use metal:generic or vulkan:generic, or a cuda/llvm dict",
                )
            if kind == "cuda" and isinstance(device.get("arch"), list):
                return Unsupported(
                    message="the legacy flow builds one CUDA arch per library "
                    "(its cuda-multiarch target probes the GPU)",
                    fix="give one arch per target, e.g. two targets sm_80 and sm_90",
                )
            if kind == "cuda" and "arch" not in device:
                return Unsupported(
                    message="a CUDA target without an arch makes the legacy flow probe the local GPU",
                    fix='add "arch", e.g. {"kind": "cuda", "arch": "sm_80"}',
                )
            # TVM of that era parses "kind -key=value ..." target strings.
            return _cuda_target(device) if kind == "cuda" else _target_string(device)
        spelled = _PRESET_SPELLING.get(device)
        if spelled is None:
            return Unsupported(
                message=f"the legacy flow has no device-free spelling of preset {device!r}",
                fix="use one of " + ", ".join(sorted(_PRESET_SPELLING)) + " or a target dict",
            )
        return spelled

    def library_name(self, model: str, quant: str, target_name: str, target: Target) -> str | Unsupported:
        # core.build: f"{model}-{quant}-{target_kind}.{lib_format}"; lib_format
        # stays "so" for cuda, metal and vulkan (only iphone/android/webgpu change it).
        if target.suffix not in (None, "so"):
            return Unsupported(
                message=f"the legacy flow always writes a .so library for {target.device_kind}, not .{target.suffix}",
                fix="drop `suffix` from this target, or exclude it for legacy-flow models",
            )
        return f"{model}-{quant}-{target.device_kind}.so"

    # core.BuildArgs at b44cdc53: every flag below is a field there. Convert and
    # compile are separate invocations of the same CLI (--convert-weights-only,
    # --build-model-only), so one conversion serves every target. --use-cache=0
    # keeps it from reusing a pickled module left in the artifact path.
    def convert_steps(self, model: Model, quant: str, source_format: SourceFormat) -> tuple[StepArgv, ...]:
        argv = [
            *_BUILD,
            "--model", f"{MODEL_ROOT}/{model.name}",
            "--quantization", quant,
            # Weights do not depend on the target; llvm names none that needs a GPU.
            "--target", "llvm",
            "--artifact-path", OUT,
            "--use-cache", "0",
            "--convert-weights-only",
        ]  # fmt: skip
        if source_format == "huggingface-safetensor":
            argv.append("--use-safetensors")
        return (StepArgv(name="convert", argv=tuple(argv)),)

    def converted_params(self, model: str, quant: str) -> str:
        return f"{model}-{quant}/params"

    def compile_steps(
        self, model: Model, quant: str, target_name: str, target: Target, build: BuildOptions
    ) -> tuple[StepArgv, ...]:
        argument = self.target_argument(target)
        assert isinstance(argument, str), argument
        argv = [
            *_BUILD,
            "--model", f"{MODEL_ROOT}/{model.name}",
            "--quantization", quant,
            "--target", argument,
            "--artifact-path", OUT,
            "--use-cache", "0",
            "--build-model-only",
        ]  # fmt: skip
        if target.device_kind == "cuda":
            # CUTLASS kernels query tvm.cuda(0) while building; without a GPU they
            # must stay off, and cuBLAS too for unquantized (q0) weights.
            argv += ["--no-cutlass-attn", "--no-cutlass-norm"]
            if quant in CONTRACT.cuda.cublas_only_for:
                argv.append("--no-cublas")
        return (StepArgv(name="compile", argv=tuple(argv)),)

    def compiled_library(self, model: str, quant: str, target_name: str, target: Target) -> str:
        library = self.library_name(model, quant, target_name, target)
        assert isinstance(library, str), library
        return f"{model}-{quant}/{library}"

    def bundle_params_dir(self) -> str:
        # The legacy runtime (mlc_chat) reads dist/<model>-<quant>/params next to the library.
        return "params"


_BUILD = CONTRACT.commands["build"].argv


def _target_string(device: Mapping[str, object]) -> str:
    options = []
    for key in sorted(k for k in device if k != "kind"):
        value = device[key]
        if isinstance(value, list):
            value = ",".join(map(str, value))
        elif isinstance(value, bool):
            value = int(value)
        options.append(f"-{key}={value}")
    return " ".join([str(device["kind"]), *options])


def _cuda_target(device: Mapping[str, object]) -> str:
    """A CUDA target that needs no GPU and carries what dlight's GEMV rule reads.

    mlc_llm.build schedules every CUDA model with dlight, whose GEMV rule reads
    the target's max_shared_memory_per_block and fails when it is missing; a
    plain "cuda -arch=sm_80" string sets only the arch. TVM's target tags for
    A100/H100 carry every attribute, so a bare arch with a tag becomes the tag.
    Any other arch gets a target string with the limits those tags record (48 KB
    of static shared memory, 1024 threads, warps of 32, 64K registers per block,
    common to every CUDA arch since sm_50), unless the device gives its own.
    """
    cuda = CONTRACT.cuda
    tag = cuda.tags.get(str(device["arch"]))
    if set(device) == {"kind", "arch"} and tag is not None:
        return tag.tag
    limits = cuda.tags["sm_80"]
    defaults = {
        "max_shared_memory_per_block": limits.max_shared_memory_per_block,
        "max_threads_per_block": limits.max_threads_per_block,
        "thread_warp_size": limits.thread_warp_size,
        "registers_per_block": limits.registers_per_block,
    }
    assert cuda.gemv_needs_attribute in defaults
    return _target_string({**defaults, **device})
