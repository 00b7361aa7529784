"""The recorded upstream contract of each pinned mlc-llm commit.

One JSON file per pin under `contracts/<commit>.json`, written once by reading
the upstream sources at that commit; every fact carries the upstream file and
line it was read at (`tvm:` marks a file of the TVM fork rather than mlc-llm).
Two readers use the same file: the flow modules here, which render argv and
check manifests, and the conformance stand-in under tests/toolchains, which
accepts exactly the flags and choices recorded. A test holds both to it, so
the factory's tables and its test double cannot drift apart.

The stand-in reads the JSON with the standard library only (it runs inside a
toolchain image); this module gives the factory typed, frozen views of it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

CONTRACT_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Pin(_Frozen):
    repo: str
    commit: str


class TvmReadAt(_Frozen):
    repo: str
    commit: str
    why: str


class Argument(_Frozen):
    """One argument of a pinned CLI, as its argparse declaration has it."""

    name: str
    kind: Literal["positional", "value", "flag"]
    source: str
    type: Literal["str", "int", "bool"] | None = None
    parsed_by: str | None = None
    default: Any = None
    required: bool = False
    choices: str | tuple[str, ...] | None = None
    """A literal list, or the name of a recorded list ("quantizations", "model_types_or_auto", "conv_templates")."""
    aliases: tuple[str, ...] = ()
    dest: str | None = None


class Command(_Frozen):
    argv: tuple[str, ...]
    source: str
    arguments: tuple[Argument, ...]

    def flags(self) -> frozenset[str]:
        """Every option spelling the command accepts."""
        return frozenset(s for a in self.arguments if a.kind != "positional" for s in (a.name, *a.aliases))


class QuantizationName(_Frozen):
    name: str
    source: str
    kind: str | None = None
    """The current flow's quantization kind (group-quant, ft-quant, ...); the legacy file has none."""


class Quantizations(_Frozen):
    source: str
    names: tuple[QuantizationName, ...]

    def all(self) -> frozenset[str]:
        return frozenset(q.name for q in self.names)

    def of_kinds(self, kinds: tuple[str, ...]) -> frozenset[str]:
        return frozenset(q.name for q in self.names if q.kind in kinds)


class NamedFact(_Frozen):
    name: str
    source: str


class NamedList(_Frozen):
    source: str
    names: tuple[NamedFact, ...]

    def all(self) -> frozenset[str]:
        return frozenset(n.name for n in self.names)


class ModelNameRule(_Frozen):
    prefix: str
    prefix_source: str
    world_words: tuple[str, ...]
    world_source: str
    named_after: str
    named_after_source: str


class LegacyTargets(_Frozen):
    probe_local_gpu: tuple[str, ...]
    probe_source: str
    presets: dict[str, str]
    """Device-free preset spellings -> where upstream builds the target for them."""
    other_strings: str
    other_strings_source: str
    library: str
    library_source: str


class CudaTag(_Frozen):
    tag: str
    max_shared_memory_per_block: int
    max_threads_per_block: int
    thread_warp_size: int
    registers_per_block: int
    source: str


class LegacyCuda(_Frozen):
    gemv_needs_attribute: str
    gemv_source: str
    gemv_cuda_loads_vector_to_shared: str
    attribute_read_source: str
    string_target_sets_only_arch: str
    dlight_applied_source: str
    tag_macro_source: str
    tags: dict[str, CudaTag]
    """CUDA arch (sm_80) -> the TVM target tag that carries every attribute dlight reads."""
    cutlass_queries_gpu: str
    cutlass_patterns_source: str
    cublas_only_for: tuple[str, ...]
    cublas_source: str


class RuntimeRequires(_Frozen):
    package: str
    names: tuple[str, ...]
    source: str
    imported_not_declared: tuple[NamedFact, ...] = ()


class TvmCmake(_Frozen):
    """What the pinned TVM's CMake reads, and what the image must give it."""

    config_file: str
    config_file_source: str
    cuda_architectures_variable: str
    cuda_architectures_check: str
    enable_language_cuda: str
    arch_specific: dict[str, str]
    """Compute capability -> the arch-specific name TVM's CMake looks for (90 -> 90a enables sm90 kernels)."""
    arch_specific_source: str | None = None
    upstream_ci_value: str
    upstream_ci_source: str

    def cuda_architectures(self, archs: list[str]) -> str:
        """CMAKE_CUDA_ARCHITECTURES for CUDA archs such as sm_80, sm_90: "80;90a"."""
        numbers = sorted({a.removeprefix("sm_") for a in archs}, key=lambda n: (len(n), n))
        return ";".join(self.arch_specific.get(n, n) for n in numbers)


class TvmPython(_Frozen):
    """How the pinned TVM's Python package is installed: from python/ (setup.py) or the root (pyproject)."""

    install: Literal["python", "."]
    source: str
    build_dir: str | None = None
    build_dir_source: str | None = None
    ffi_package: str | None = None
    setup_py_removed_in: str | None = None


class TokenizersCppCommit(_Frozen):
    """Whether one tokenizers-cpp commit has the RWKV World encoder fix, read from its ancestry."""

    commit: str
    rwkv_world_fix: bool
    evidence: str
    note: str = ""


class TokenizersCppSubmodule(_Frozen):
    commit: str
    evidence: str


class TokenizersCppFix(_Frozen):
    pr: int
    commit: str
    evidence: str


class TokenizersCpp(_Frozen):
    """The pin's tokenizers-cpp: its submodule commit, the change that fixed the RWKV
    World encoder (PR #19), and every commit the factory may run with this pin,
    each with whether #19 is among its ancestors."""

    submodule: TokenizersCppSubmodule
    fix: TokenizersCppFix
    commits: tuple[TokenizersCppCommit, ...]


class LegacyContract(_Frozen):
    contract_version: Literal[1]
    flow: Literal["legacy"]
    mlc_llm: Pin
    tvm_read_at: TvmReadAt
    commands: dict[str, Command]
    quantizations: Quantizations
    model_name: ModelNameRule
    targets: LegacyTargets
    cuda: LegacyCuda
    params_index: NamedFact
    float32_params: NamedFact
    """How the params writer encodes float32 tensors: "raw", or "f32-to-bf16" (lossy)."""
    runtime_requires: RuntimeRequires
    tvm_cmake: TvmCmake
    tvm_python: TvmPython
    tokenizers_cpp: TokenizersCpp


class RwkvModel(_Frozen):
    quantization_kinds: tuple[str, ...]
    source: str
    model_version: str
    model_version_source: str


class ConvTemplates(_Frozen):
    source: str
    names: tuple[str, ...]


class CurrentTargets(_Frozen):
    presets: NamedList
    probe_local_device: tuple[str, ...]
    probe_source: str


class SourceWeights(_Frozen):
    """What convert_weight does to the source folder: with a lone model.safetensors and
    no index, it writes the index there (so a read-only source fails unless the factory
    made the index at fetch time, factory/cells/fetch.py index_single_safetensors)."""

    index: str
    single: str
    formats: tuple[str, ...]
    writes_index: str
    writes_index_source: str
    checked_for_explicit_format_source: str


class CurrentContract(_Frozen):
    contract_version: Literal[1]
    flow: Literal["current"]
    mlc_llm: Pin
    tvm_read_at: TvmReadAt
    commands: dict[str, Command]
    quantizations: Quantizations
    quantization_kinds_source: dict[str, str]
    model_types: NamedList
    rwkv: dict[str, RwkvModel]
    """mlc-llm model type (rwkv5, rwkv6) -> the quantization kinds it registers and the version it requires."""
    conv_templates: ConvTemplates
    targets: CurrentTargets
    params_index: NamedFact
    float32_params: NamedFact
    """How convert_weight encodes float32 tensors: "raw", or "f32-to-bf16" (lossy)."""
    tvm_cmake: TvmCmake
    tvm_python: TvmPython
    tokenizers_cpp: TokenizersCpp
    source_weights: SourceWeights

    def model_quantizations(self, model_type: str) -> frozenset[str]:
        return self.quantizations.of_kinds(self.rwkv[model_type].quantization_kinds)


def contract_text(commit: str) -> str:
    """The raw recorded contract of mlc-llm `commit` (the full 40-hex id)."""
    return resources.files(__package__).joinpath("contracts", f"{commit}.json").read_text(encoding="utf-8")


@cache
def legacy_contract(commit: str) -> LegacyContract:
    return LegacyContract.model_validate_json(contract_text(commit))


@cache
def current_contract(commit: str) -> CurrentContract:
    return CurrentContract.model_validate_json(contract_text(commit))


def contract_for(commit: str) -> LegacyContract | CurrentContract | None:
    """The recorded contract of mlc-llm `commit`, whichever generation it is; None if none is recorded."""
    try:
        text = contract_text(commit)
    except FileNotFoundError:
        return None
    if json.loads(text).get("flow") == "legacy":
        return legacy_contract(commit)
    return current_contract(commit)


def recorded_pins() -> tuple[str, ...]:
    """Every mlc-llm commit with a recorded contract."""
    folder = resources.files(__package__).joinpath("contracts")
    return tuple(sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")))


def tokenizers_cpp_commit(commit: str) -> TokenizersCppCommit | None:
    """What the recorded contracts say about tokenizers-cpp `commit` (full 40-hex id);
    None when no contract records it, so nobody knows whether it has the fix."""
    for pin in recorded_pins():
        contract = contract_for(pin)
        assert contract is not None
        for entry in contract.tokenizers_cpp.commits:
            if entry.commit == commit:
                return entry
    return None
