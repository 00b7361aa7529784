"""The current flow: `mlc_llm convert_weight`, `gen_config`, `compile`.

Facts come from the recorded contract of mlc-llm tag v0.20.0 (bb586e51),
contracts/<commit>.json, which names the upstream file and line of each:
python/mlc_llm/cli/*.py, quantization/quantization.py, model/model.py,
support/auto_target.py.
"""

from __future__ import annotations

import json

from factory.manifest.model import BuildOptions, Model, ModelType, Target
from factory.toolchains.base import (
    CONVERTED,
    MODEL_ROOT,
    OUT,
    WEB_RUNTIME_IN_IMAGE,
    WEBGPU_COMPILE_ENV,
    SourceFormat,
    StepArgv,
    Unsupported,
    host_triple,
    system_lib_prefix,
    web_runtime_name,
)
from factory.toolchains.contract import current_contract

READ_AT = "bb586e51eb20cba2e82216b75d22d8dd6657cce1"
CONTRACT = current_contract(READ_AT)

# quantization.QUANTIZATION: every name `--quantization` accepts.
CLI_QUANTIZATIONS = CONTRACT.quantizations.all()

# model.MODELS: the quantization kinds each RWKV model type registers.
_MODEL_QUANTIZATIONS: dict[str, frozenset[str]] = {
    "rwkv5-world": CONTRACT.model_quantizations("rwkv5"),
    "rwkv6-world": CONTRACT.model_quantizations("rwkv6"),
    # Not upstream: the factory's RWKV-4 and RWKV-7 ports (images/wheel/patches/rwkv4-model.patch,
    # rwkv7-model.patch) register their quantizations exactly as rwkv6 does (no FasterTransformer kinds).
    "rwkv4-world": CONTRACT.model_quantizations("rwkv6"),
    "rwkv7-world": CONTRACT.model_quantizations("rwkv6"),
}

# How many leading layers stay float32 at float16 quantizations (models[].overrides.float32_layers):
# the rwkv4 port (images/wheel/patches/rwkv4-model.patch, `provides: [float32_layers]`) reads it
# where the checkpoint's config.json has no such field, in convert_weight and gen_config; gen_config
# writes it into mlc-chat-config.json, which compile reads, so the bundle carries it.
FLOAT32_LAYERS_ENV = "FACTORY_FLOAT32_LAYERS"

# support/auto_target.PRESET keys (they need no local device), plus plain llvm.
PRESETS = CONTRACT.targets.presets.all() | {"llvm"}
# Names that make compile probe a local device (TVM's Device.exist), which needs a GPU.
_PROBING = frozenset({"auto", *CONTRACT.targets.probe_local_device})


class CurrentFlow:
    name = "current"
    read_at = READ_AT
    params_index = CONTRACT.params_index.name
    cli_quantizations = CLI_QUANTIZATIONS

    def model_quantizations(self, model_type: ModelType) -> frozenset[str] | None:
        return _MODEL_QUANTIZATIONS.get(model_type)

    def check_model(self, model: Model) -> Unsupported | None:
        return None

    def target_argument(self, target: Target) -> str | Unsupported:
        device = target.device
        if isinstance(device, dict):
            # compile --device takes a JSON dict; TVM 0.26+ rejects "cuda -arch=..." strings.
            # A list of CUDA archs becomes a fatbin: the first arch names the target,
            # MLC_MULTI_ARCH (see compile_steps) adds the rest.
            archs = device.get("arch")
            if device.get("kind") == "cuda" and isinstance(archs, list):
                if not archs:
                    return Unsupported(message="an empty CUDA arch list", fix='give at least one, e.g. ["sm_80"]')
                device = {**device, "arch": archs[0]}
            if device.get("kind") == "llvm" and "host" not in device:
                # On a CPU target TVM compiles the model's kernels as host code, and compile
                # takes the host from --host (a bare triple, so generic x86-64) unless the
                # target names one: without this an x86-64-v3 library had no AVX at all.
                host = {k: v for k, v in device.items() if k in ("kind", "mtriple", "mcpu")}
                return json.dumps({**device, "host": host}, sort_keys=True, separators=(",", ":"))
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

    # cli/convert_weight.py, gen_config.py and compile.py at v0.20.0. --device cpu
    # keeps convert_weight off the GPU probe ("auto"); compile gets an explicit target.
    def convert_steps(self, model: Model, quant: str, source_format: SourceFormat) -> tuple[StepArgv, ...]:
        source = f"{MODEL_ROOT}/{model.name}"
        model_type = _MODEL_TYPE[model.type]
        convert = (
            "mlc_llm", "convert_weight", source,
            "--quantization", quant,
            "--model-type", model_type,
            "--device", "cpu",
            "--source", source,
            "--source-format", source_format,
            "--output", OUT,
        )  # fmt: skip
        gen_config = (
            "mlc_llm", "gen_config", source,
            "--quantization", quant,
            "--model-type", model_type,
            "--conv-template", model.conv_template,
            "--context-window-size", str(model.context_window),
            "--tensor-parallel-shards", "1",
            "--output", OUT,
        )  # fmt: skip
        layers = model.overrides.float32_layers
        env = {FLOAT32_LAYERS_ENV: str(layers)} if layers else {}
        return (
            StepArgv(name="convert_weight", argv=convert, env=env),
            StepArgv(name="gen_config", argv=gen_config, env=env),
        )

    def converted_params(self, model: str, quant: str) -> str:
        return "."

    def compile_steps(
        self, model: Model, quant: str, target_name: str, target: Target, build: BuildOptions
    ) -> tuple[StepArgv, ...]:
        argument = self.target_argument(target)
        library = self.library_name(model.name, quant, target_name, target)
        assert isinstance(argument, str) and isinstance(library, str)
        # --host: without it host code is tuned for the build machine's CPU
        # (support/auto_target.py _detect_target_host), which users may not have.
        argv = (
            "mlc_llm", "compile", f"{CONVERTED}/mlc-chat-config.json",
            "--quantization", quant,
            "--model-type", _MODEL_TYPE[model.type],
            "--device", argument,
            "--host", host_triple(target),
            *_offload_opt(target, build),
            "--output", f"{OUT}/{library}",
        )  # fmt: skip
        if target.library_suffix == "tar":
            # A system library (iOS, Android) is found by its prefix: the package entry names it.
            argv += ("--system-lib-prefix", system_lib_prefix(model.name, quant))
        env = {}
        archs = target.device.get("arch") if isinstance(target.device, dict) else None
        if target.device_kind == "cuda" and isinstance(archs, list):
            env["MLC_MULTI_ARCH"] = ",".join(a.removeprefix("sm_") for a in archs)
        steps = [StepArgv(name="compile", argv=argv, env=env)]
        if target.device_kind == "webgpu":
            env.update(WEBGPU_COMPILE_ENV)
            # The JS runtime that loads this .wasm, from the same image: it travels with the bundle.
            runtime = ("cp", WEB_RUNTIME_IN_IMAGE, f"{OUT}/{web_runtime_name(library)}")
            steps.append(StepArgv(name="web_runtime", argv=runtime))
        return tuple(steps)

    def compiled_library(self, model: str, quant: str, target_name: str, target: Target) -> str:
        library = self.library_name(model, quant, target_name, target)
        assert isinstance(library, str)
        return library

    def bundle_params_dir(self) -> str:
        # `mlc_llm chat DIR --model-lib DIR/LIB`: config, params and tokenizer in one folder.
        return ""


def _offload_opt(target: Target, build: BuildOptions) -> tuple[str, ...]:
    """`--opt` for CUDA when the toolchain lacks a library the default O2 offloads to.

    interface/compiler_flags.py: O2 turns on flashinfer, cublas_gemm, cutlass and
    cudagraph; a flag string starts from flashinfer=1 and the rest off. Our images
    never build FlashInfer, and a toolchain without cuBLAS (the PyPI TVM wheel) stops
    q0 compiles with "cuBLAS is not enabled"."""
    if target.device_kind != "cuda" or (build.cublas and build.cutlass):
        return ()
    flags = {
        "flashinfer": 0,
        "cublas_gemm": int(build.cublas),
        "faster_transformer": 0,
        "cudagraph": 1,
        "cutlass": int(build.cutlass),
    }
    return ("--opt", ";".join(f"{k}={v}" for k, v in flags.items()))


# model/model.py MODELS keys for our manifest types.
_MODEL_TYPE = {"rwkv4-world": "rwkv4", "rwkv5-world": "rwkv5", "rwkv6-world": "rwkv6", "rwkv7-world": "rwkv7"}
