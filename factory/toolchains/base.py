"""What every flow generation must tell the factory about its pinned mlc-llm.

A flow module holds facts read from upstream source at one commit: which
quantization names its CLI accepts, which model types it can build, how it
spells an explicit target, and what files it writes. Planning asks these
questions; later steps (argv rendering, layout lint) ask more of the same module.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Literal, Protocol

from factory.in_toolchain import SCRIPTS_DIR
from factory.manifest.model import BuildOptions, Model, ModelType, Target, WeightFormat


@dataclass(frozen=True, kw_only=True)
class Unsupported:
    """Why a flow cannot do something, and what the user can change."""

    message: str
    fix: str


# Where steps see their inputs and write their outputs (container paths; the host
# runner maps them to real folders). The legacy CLI names a model after its folder,
# so the HF snapshot is mounted at MODEL_ROOT/<model name>.
MODEL_ROOT = "/in/model"
CONVERTED = "/in/converted"
OUT = "/out"

SourceFormat = Literal["huggingface-safetensor", "huggingface-torch"]
SOURCE_FORMATS: dict[WeightFormat, SourceFormat] = {
    "safetensors": "huggingface-safetensor",
    "pytorch": "huggingface-torch",
}

# LLVM triples for host code, by the target's OS and architecture: a triple alone
# leaves the CPU generic, so the library runs on any CPU of that architecture.
_HOST_TRIPLES = {
    ("linux", "x86_64"): "x86_64-unknown-linux-gnu",
    ("linux", "arm64"): "aarch64-unknown-linux-gnu",
    ("macos", "x86_64"): "x86_64-apple-darwin",
    ("macos", "arm64"): "arm64-apple-darwin",
}


def host_triple(target: Target) -> str:
    return _HOST_TRIPLES[(target.os, target.arch)]


@dataclass(frozen=True, kw_only=True)
class StepArgv:
    """One CLI invocation of the pinned mlc-llm, exactly as it will run."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


# Where a WebGPU image (images/wheel/webgpu/build.sh) keeps what `mlc_llm compile --device
# webgpu` links into a .wasm: TVM's web runtime objects under TVM_HOME/web/dist/wasm and
# mlc-llm's under MLC_LLM_SOURCE_DIR/web/dist/wasm.
WEBGPU_COMPILE_ENV = {"TVM_HOME": "/opt/factory/webgpu/tvm", "MLC_LLM_SOURCE_DIR": "/opt/mlc-llm"}
# TVM's JS runtime the same image built from the same TVM commit as the .wasm's runtime
# objects: a WebGPU bundle carries a copy beside its library, since a page that loads the
# .wasm needs exactly this one (npm's @mlc-ai/web-runtime is another commit).
WEB_RUNTIME_IN_IMAGE = "/opt/factory/webgpu/tvmjs.js"
WEB_RUNTIME_SUFFIX = ".tvmjs.js"


def web_runtime_name(library: str) -> str:
    """The JS runtime's file name beside a WebGPU library: `X.wasm` -> `X.tvmjs.js`."""
    return library.removesuffix(".wasm") + WEB_RUNTIME_SUFFIX


# Where a build mounts factory/in_toolchain/ for its steps and gates.
SCRIPTS_MOUNT = "/factory"
# What the kernel check (in_toolchain/kernel_check_script.py) writes beside the library.
KERNEL_CHECK_REPORT = "kernel-check.json"
_KERNEL_CHECK_SCRIPT = "kernel_check_script.py"


def needs_kernel_check(target: Target) -> bool:
    """Every target whose kernels run on a GPU: its scheduled TIR is checked as it compiles."""
    return target.device_kind != "llvm"


@cache
def kernel_check_digest() -> str:
    """The check is part of how a GPU library is built: a changed check compiles again."""
    return hashlib.sha256((SCRIPTS_DIR / _KERNEL_CHECK_SCRIPT).read_bytes()).hexdigest()


def with_kernel_check(steps: tuple[StepArgv, ...], target: Target) -> tuple[StepArgv, ...]:
    """The flow's compile steps, the `compile` one run through the kernel check on GPU targets."""
    if not needs_kernel_check(target):
        return steps
    script = f"{SCRIPTS_MOUNT}/{_KERNEL_CHECK_SCRIPT}"
    return tuple(
        replace(s, argv=("python", script, f"{OUT}/{KERNEL_CHECK_REPORT}", "--", *s.argv)) if s.name == "compile" else s
        for s in steps
    )


class Flow(Protocol):
    name: str
    read_at: str
    """The upstream mlc-llm commit the facts in this module were read at."""
    params_index: str
    cli_quantizations: frozenset[str]

    def model_quantizations(self, model_type: ModelType) -> frozenset[str] | None:
        """Quantizations the flow can apply to this model type; None if it cannot build it."""

    def check_model(self, model: Model) -> Unsupported | None:
        """Flow-specific rules a model entry must satisfy beyond its type."""

    def target_argument(self, target: Target) -> str | Unsupported:
        """The exact target/device argument this flow's CLI gets for `target`."""

    def library_name(self, model: str, quant: str, target_name: str, target: Target) -> str | Unsupported:
        """The file name of the compiled model library this flow writes."""

    def convert_steps(self, model: Model, quant: str, source_format: SourceFormat) -> tuple[StepArgv, ...]:
        """Steps that turn the HF snapshot at MODEL_ROOT/<model> into params + mlc-chat-config.json under OUT."""

    def converted_params(self, model: str, quant: str) -> str:
        """Where, under the convert output, the params index, shards and mlc-chat-config.json are."""

    def compile_steps(
        self, model: Model, quant: str, target_name: str, target: Target, build: BuildOptions
    ) -> tuple[StepArgv, ...]:
        """Steps that compile the model library for one target into OUT (convert output at CONVERTED),
        with the toolchain's build switches (which offloads its TVM has)."""

    def compiled_library(self, model: str, quant: str, target_name: str, target: Target) -> str:
        """Where, under the compile output, the library is."""

    def bundle_params_dir(self) -> str:
        """Folder of the bundle holding params, config and tokenizer ("" = the bundle's root)."""


def system_lib_prefix(model: str, quant: str) -> str:
    """The `--system-lib-prefix` of a system-library compile (a `.tar` library for iOS and
    Android), which an `mlc-package-config.json` entry names as its `model_lib`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{model}_{quant}") + "_"
