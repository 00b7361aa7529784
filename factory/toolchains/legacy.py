"""The legacy flow: `python3 -m mlc_llm.build`, deleted upstream in 20efccb7.

Facts read at mlc-llm b44cdc53 (the last commit before the old flow was
deprecated): mlc_llm/core.py, mlc_llm/utils.py, mlc_llm/quantization/__init__.py.
"""

from __future__ import annotations

from ..manifest.model import BuildOptions, Model, ModelType, Target
from .base import MODEL_ROOT, OUT, SourceFormat, StepArgv, Unsupported

# mlc_llm/quantization/__init__.py: every key of `quantization_schemes`.
CLI_QUANTIZATIONS = frozenset(
    {
        "autogptq_llama_q4f16_0",
        "autogptq_llama_q4f16_1",
        "q0f16",
        "q0f32",
        "q3f16_0",
        "q3f16_1",
        "q4f16_0",
        "q4f16_1",
        "q4f16_2",
        "q4f16_ft",
        "q4f16_ft_group",
        "q4f32_0",
        "q4f32_1",
        "q8f16_ft",
        "q8f16_ft_group",
        "q8f16_1",
    }
)

# relax_model/rwkv.py goes through the generic param manager: no-quantization
# and group quantization apply; the autogptq schemes are llama-only and the
# FasterTransformer ones were only ever exercised on llama-family models.
_RWKV4_QUANTIZATIONS = frozenset(
    {"q0f16", "q0f32", "q3f16_0", "q3f16_1", "q4f16_0", "q4f16_1", "q4f16_2", "q4f32_0", "q4f32_1"}
)

# utils.parse_target: these spellings need no local device. Bare "cuda" probes
# the local GPU and fails without one, so CUDA always gets a full target string.
_PRESET_SPELLING = {"metal:generic": "metal", "vulkan:generic": "vulkan"}


class LegacyFlow:
    name = "legacy"
    read_at = "b44cdc53381bd804ef000775bb280de1c7ca6439"
    params_index = "ndarray-cache.json"
    cli_quantizations = CLI_QUANTIZATIONS

    def model_quantizations(self, model_type: ModelType) -> frozenset[str] | None:
        return _RWKV4_QUANTIZATIONS if model_type == "rwkv4-world" else None

    def check_model(self, model: Model) -> Unsupported | None:
        # utils.argparse_postproc_common picks model_category "rwkv_world" (and
        # the rwkv_world conversation template) only when the model folder's
        # name contains both "rwkv" and "world"; the folder is named after the model.
        lowered = model.name.lower()
        if "rwkv" not in lowered or "world" not in lowered:
            return Unsupported(
                message=f"the legacy flow names the model after its folder and only treats it as "
                f"RWKV World when the name contains 'rwkv' and 'world'; {model.name!r} does not",
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
            options = []
            for key in sorted(k for k in device if k != "kind"):
                value = device[key]
                if isinstance(value, list):
                    value = ",".join(value)
                elif isinstance(value, bool):
                    value = int(value)
                options.append(f"-{key}={value}")
            return " ".join([kind, *options])
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
            if quant.startswith("q0"):
                argv.append("--no-cublas")
        return (StepArgv(name="compile", argv=tuple(argv)),)

    def compiled_library(self, model: str, quant: str, target_name: str, target: Target) -> str:
        library = self.library_name(model, quant, target_name, target)
        assert isinstance(library, str), library
        return f"{model}-{quant}/{library}"

    def bundle_params_dir(self) -> str:
        # The legacy runtime (mlc_chat) reads dist/<model>-<quant>/params next to the library.
        return "params"


_BUILD = ("python", "-m", "mlc_llm.build")
