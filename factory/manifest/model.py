"""The manifest's schema: frozen pydantic models that reject unknown keys.

Only shape and single-field rules live here. Rules that relate fields to each
other or to upstream facts (which quantizations a toolchain knows, which
runner serves a target) live in `checks.py`, so each rule has one home.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

# Names become folder and file names, cache keys and CLI selectors, so they
# are kept to a conservative alphabet: no `/`, no leading dot, no `..`.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
NAME_RE = re.compile(NAME_PATTERN)
COMMIT_PATTERN = r"^[0-9a-f]{40}$"

ModelType = Literal["rwkv4-world", "rwkv5-world", "rwkv6-world", "rwkv7-world"]
# mlc-llm model types the current flow has at no upstream commit; a toolchain patch must add
# them. RWKV-4 was upstream only in the legacy flow (relax_model/rwkv.py, deleted in 20efccb7),
# which builds it as it is.
PatchedModelType = Literal["rwkv4", "rwkv7"]
PATCHED_MODEL_TYPES: dict[str, PatchedModelType] = {"rwkv4-world": "rwkv4", "rwkv7-world": "rwkv7"}
FlowName = Literal["legacy", "current"]
Override = Literal["first_layer_fp32", "float32_layers"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourcePin(Frozen):
    """A git repository at one exact commit."""

    repo: StrictStr = Field(description="Clone URL, e.g. https://github.com/mlc-ai/relax")
    commit: Annotated[StrictStr, Field(pattern=COMMIT_PATTERN)] = Field(
        description="Full 40-hex commit; short or symbolic refs are not reproducible"
    )


class WheelPin(Frozen):
    """TVM from a pinned PyPI wheel instead of a source build (the wheel toolchain)."""

    wheel: Annotated[StrictStr, Field(pattern=r"^apache-tvm==[0-9][0-9A-Za-z.+-]*$")] = Field(
        description="apache-tvm==VERSION; the image's hashed requirements.lock must pin the same version"
    )
    source: SourcePin | None = Field(
        default=None,
        description="apache/tvm at the commit the wheel was built from: the image builds what the wheel "
        "leaves out (the Vulkan runtime and codegen; the web runtime) from it. Needed with build.vulkan "
        "and build.webgpu",
    )
    ffi_source: SourcePin | None = Field(
        default=None, description="apache/tvm-ffi at that commit's 3rdparty/tvm-ffi submodule commit"
    )

    @property
    def version(self) -> str:
        return self.wheel.split("==", 1)[1]


class BuildOptions(Frozen):
    """TVM/mlc-llm build switches. The Linux image honours cuda/cutlass/cublas/vulkan/webgpu;
    the macOS metal-runner honours metal. LLVM is needed for host code everywhere."""

    cuda: StrictBool = False
    cutlass: StrictBool = False
    cublas: StrictBool = False
    llvm: StrictBool = True
    metal: StrictBool = False
    vulkan: StrictBool = False
    webgpu: StrictBool = Field(
        default=False,
        description="emscripten, TVM's web runtime and Chromium in the image: WebGPU .wasm bundles, "
        "gated in the browser on SwiftShader (wheel toolchains)",
    )


class Patch(Frozen):
    path: StrictStr = Field(description="Patch file, relative to the manifest root")
    applies_to: Literal["mlc-llm", "tvm", "tokenizers-cpp"] = "mlc-llm"
    provides: tuple[Override, ...] = Field(default=(), description="Model overrides this patch implements")
    model_types: tuple[PatchedModelType, ...] = Field(
        default=(), description="mlc-llm model types this patch adds (the current flow has no RWKV-4 or RWKV-7)"
    )


class ImageSpec(Frozen):
    dockerfile: StrictStr = "images/cuda/Dockerfile"
    context: StrictStr = "images/cuda"


class Toolchain(Frozen):
    @property
    def tvm_identity(self) -> str:
        """The TVM a bundle's library was built with: a relax commit or a wheel pin."""
        return self.tvm.wheel if isinstance(self.tvm, WheelPin) else self.tvm.commit

    @property
    def is_wheel(self) -> bool:
        return isinstance(self.tvm, WheelPin)

    flow: FlowName = Field(description="legacy: `python -m mlc_llm.build`; current: convert_weight/gen_config/compile")
    tvm: SourcePin | WheelPin = Field(
        description="The mlc-ai/relax commit this mlc-llm commit was built against, "
        "or {wheel: apache-tvm==VERSION} for TVM from PyPI"
    )
    mlc_llm: SourcePin
    tokenizers_cpp: SourcePin | None = Field(
        default=None, description="Override of mlc-llm's 3rdparty/tokenizers-cpp submodule"
    )
    build: BuildOptions = BuildOptions()
    cuda_version: Annotated[StrictStr, Field(pattern=r"^\d+\.\d+(\.\d+)?$")] | None = None
    python_version: Annotated[StrictStr, Field(pattern=r"^3\.\d+$")] = "3.11"
    base_image: StrictStr = Field(description="Base image reference; its digest is locked")
    params_index: Literal["ndarray-cache.json", "tensor-cache.json"] | None = Field(
        default=None,
        description="Params index name; defaults by flow (current-flow commits before "
        "mlc-llm 91d95f9d write ndarray-cache.json and must say so here)",
    )
    patches: tuple[Patch, ...] = ()
    image: ImageSpec = ImageSpec()


WeightFormat = Literal["safetensors", "pytorch"]


class HFSource(Frozen):
    repo: StrictStr = Field(description="Hugging Face repo id, ORG/NAME")
    revision: StrictStr = Field(default="main", description="Branch, tag or commit; locked to a commit")
    format: WeightFormat = Field(
        default="safetensors",
        description="Which weight files to fetch and convert: *.safetensors or pytorch_model*.bin",
    )


class LocalSource(Frozen):
    """A model folder on this machine (config.json + weights) instead of a hub repo. Its
    identity in build keys and provenance is a content hash of the files a conversion
    reads, so it needs no lock entry and a changed file rebuilds what depends on it."""

    path: StrictStr = Field(description="The folder, relative to the manifest root (or absolute)")
    format: WeightFormat = Field(
        default="safetensors",
        description="Which weight files to convert: *.safetensors or pytorch_model*.bin",
    )


class TokenizerSource(Frozen):
    kind: Literal["rwkv-world-vocab"] = "rwkv-world-vocab"
    vocab: Literal["rwkv_vocab_v20230424"] = Field(
        default="rwkv_vocab_v20230424",
        description="Upstream vocab shipped by the `rwkv` package on PyPI",
    )
    path: StrictStr | None = Field(
        default=None,
        description="A vocab file in the same format inside the project, used instead of the shipped one "
        "(relative to the manifest root); the conformance check still compares it with the upstream vocab",
    )


class ModelOverrides(Frozen):
    first_layer_fp32: StrictBool = Field(
        default=False,
        description="Run the first layer in fp32 (RWKV-4-World-1.5B overflows in fp16); "
        "needs a toolchain patch that provides it",
    )

    float32_layers: Annotated[StrictInt, Field(ge=0, le=1024)] = Field(
        default=0,
        description="Run this many leading layers in float32 at float16 quantizations (activations, "
        "norms, matmul results; weights stay quantized): the RWKV-4 World cards ask it for 0.1B-1.5B "
        "(they overflow in fp16); needs a toolchain patch that provides it (rwkv4-model.patch)",
    )

    def enabled(self) -> tuple[Override, ...]:
        on: tuple[Override, ...] = ("first_layer_fp32",) if self.first_layer_fp32 else ()
        return (*on, "float32_layers") if self.float32_layers else on


class Model(Frozen):
    name: StrictStr
    hf: HFSource | None = Field(default=None, description="Where the weights come from: a Hugging Face repo ...")
    local: LocalSource | None = Field(default=None, description="... or a local folder (exactly one of hf and local)")
    type: ModelType
    toolchain: StrictStr
    conv_template: Literal["rwkv_world"] = "rwkv_world"
    tokenizer: TokenizerSource = TokenizerSource()
    context_window: Annotated[StrictInt, Field(gt=0, le=1 << 20)] = 4096
    overrides: ModelOverrides = ModelOverrides()

    @property
    def weight_format(self) -> WeightFormat:
        source = self.hf or self.local
        return source.format if source is not None else "safetensors"


DeviceDict = dict[StrictStr, StrictStr | StrictInt | StrictBool | list[StrictStr]]


class Target(Frozen):
    device: StrictStr | DeviceDict = Field(
        description='Explicit target: a JSON dict such as {"kind": "cuda", "arch": "sm_90"}, '
        "or a preset such as metal:generic"
    )
    suffix: Literal["so", "dylib", "dll", "tar", "wasm"] | None = Field(
        default=None, description="Library suffix; sets the link mode. Default: so on linux, dylib on macos"
    )
    runner: Literal["container", "host"]
    os: Literal["linux", "macos"]
    arch: Literal["x86_64", "arm64"] = "x86_64"

    @field_validator("device")
    @classmethod
    def _device_has_kind(cls, value: Any) -> Any:
        if isinstance(value, dict) and not isinstance(value.get("kind"), str):
            raise ValueError('a device dict needs a string "kind", e.g. {"kind": "cuda", "arch": "sm_90"}')
        return value

    @property
    def device_kind(self) -> str:
        if isinstance(self.device, dict):
            return str(self.device["kind"])
        return self.device.split(":", 1)[0]

    @property
    def library_suffix(self) -> str:
        if self.suffix is not None:
            return self.suffix
        return "dylib" if self.os == "macos" else "so"


class MatrixRule(Frozen):
    """Globs on the three coordinates of a cell; an omitted one matches all."""

    model: StrictStr = "*"
    quant: StrictStr = "*"
    target: StrictStr = "*"


class Matrix(Frozen):
    exclude: tuple[MatrixRule, ...] = ()
    include: tuple[MatrixRule, ...] = Field(default=(), description="Re-admits cells an exclude rule removed")


class Release(Frozen):
    name: StrictStr
    version: Annotated[StrictStr, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")]


class Manifest(Frozen):
    manifest_version: Literal[1] = Field(description="Schema version of this file")
    root: StrictStr = Field(
        default="..", description="Folder that relative paths resolve against, relative to this file"
    )
    release: Release
    store: StrictStr = Field(default="file://./store", description="file://PATH, a plain path, or s3://BUCKET/PREFIX")
    toolchains: dict[StrictStr, Toolchain]
    models: tuple[Model, ...]
    quantizations: tuple[StrictStr, ...]
    targets: dict[StrictStr, Target]
    matrix: Matrix = Matrix()
