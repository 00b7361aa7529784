"""The current flow: `mlc_llm convert_weight`, `gen_config`, `compile`.

Facts read at mlc-llm tag v0.20.0 (bb586e51): python/mlc_llm/cli/*.py,
quantization/quantization.py, model/model.py, support/auto_target.py.
"""

from __future__ import annotations

import json

from ..manifest.model import Model, ModelType, Target
from .base import Unsupported

_NO_QUANT = frozenset({"q0f16", "q0bf16", "q0f32"})
_GROUP = frozenset({"q3f16_0", "q3f16_1", "q4f16_0", "q4f16_1", "q4bf16_0", "q4bf16_1", "q4f32_1", "q4f16_2"})
_FT = frozenset({"q4f16_ft"})
_AWQ = frozenset({"q4f16_autoawq"})
_PER_TENSOR = frozenset({"e5m2_e5m2_f16", "e4m3_e4m3_f16", "e4m3_e4m3_f16_max_calibrate"})
_BLOCK_SCALE = frozenset({"fp8_e4m3fn_bf16_block_scale", "fp8_e4m3fn_bf16_block_scale_static_activation"})

# quantization.QUANTIZATION: every name `--quantization` accepts.
CLI_QUANTIZATIONS = _NO_QUANT | _GROUP | _FT | _AWQ | _PER_TENSOR | _BLOCK_SCALE

# model.MODELS: rwkv5 keeps make_quantization_functions' defaults (group + FT);
# rwkv6 passes supports_ft_quant=False. Neither supports AWQ, per-tensor or block-scale.
_MODEL_QUANTIZATIONS: dict[str, frozenset[str]] = {
    "rwkv5-world": _NO_QUANT | _GROUP | _FT,
    "rwkv6-world": _NO_QUANT | _GROUP,
}

# support/auto_target.PRESET keys that need no local device, plus plain llvm.
PRESETS = frozenset(
    {
        "iphone:generic",
        "macabi:generic",
        "android:generic",
        "android:adreno",
        "android:adreno-so",
        "windows:adreno_x86",
        "metal:x86-64",
        "webgpu:generic",
        "opencl:generic",
        "mali:generic",
        "metal:generic",
        "vulkan:generic",
        "llvm",
    }
)
# Names that make compile probe a local device (TVM's Device.exist), which needs a GPU.
_PROBING = frozenset({"auto", "cuda", "rocm", "metal", "vulkan", "opencl", "cpu"})


class CurrentFlow:
    name = "current"
    read_at = "bb586e51eb20cba2e82216b75d22d8dd6657cce1"
    params_index = "tensor-cache.json"
    cli_quantizations = CLI_QUANTIZATIONS

    def model_quantizations(self, model_type: ModelType) -> frozenset[str] | None:
        return _MODEL_QUANTIZATIONS.get(model_type)

    def check_model(self, model: Model) -> Unsupported | None:
        return None

    def target_argument(self, target: Target) -> str | Unsupported:
        device = target.device
        if isinstance(device, dict):
            # compile --device takes a JSON dict; TVM 0.26+ rejects "cuda -arch=..." strings.
            return json.dumps(device, sort_keys=True, separators=(",", ":"))
        if device in _PROBING:
            return Unsupported(
                message=f"--device {device} probes a local GPU, which build machines do not have",
                fix='give an explicit target, e.g. {"kind": "cuda", "arch": "sm_90"} or metal:generic',
            )
        if device not in PRESETS:
            return Unsupported(
                message=f"unknown device preset {device!r}",
                fix="use one of " + ", ".join(sorted(PRESETS)) + ", or a target dict",
            )
        return device

    def library_name(self, model: str, quant: str, target_name: str, target: Target) -> str | Unsupported:
        # The -o suffix sets the link mode; we name libraries like upstream's
        # prebuilt ones: {model}-{quant}-{platform}.{suffix}.
        return f"{model}-{quant}-{target_name}.{target.library_suffix}"
