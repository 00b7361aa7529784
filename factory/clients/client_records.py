"""Records for the clients that do not run `factory pull`, per bundle: a WebLLM
`ModelRecord` for browser bundles, and an `mlc-package-config.json` `model_list` entry for
system-library bundles (the iOS and Android apps `mlc_llm package` builds).

Both name the weights as the Hugging Face repo `factory export` writes, and both carry
what the bundle's gates measured rather than guesses: the VRAM figure comes from the
library's own `_metadata` (recorded by the library gate).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from factory.store.documents import BundleManifest
from factory.toolchains.base import system_lib_prefix

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4, "uint32": 4, "int8": 1, "uint8": 1}
_MIB = 1 << 20
DEFAULT_HUB_URL = "https://huggingface.co"
"""Where the weight repos `factory export` writes are served (a mirror's HF_ENDPOINT works too)."""
LOW_RESOURCE_MB = 2048
"""WebLLM's `low_resource_required`: models that fit in 2 GiB run on phones and iGPUs."""


def sri(sha256_hex: str) -> str:
    """A Subresource Integrity string (`sha256-BASE64`) from a hex sha256."""
    return "sha256-" + base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def param_bytes(params: list[dict[str, Any]]) -> int:
    """PURE: the bytes the library's `_metadata` params take."""
    total = 0
    for param in params:
        count = 1
        for dim in param.get("shape", []):
            count *= int(dim)
        total += count * _DTYPE_BYTES.get(str(param.get("dtype")), 4)
    return total


def state_bytes(model_config: dict[str, Any], model_type: str = "") -> int:
    """PURE: one sequence's RNN state (float32). Per layer, RWKV-5/6/7: the two token-shift
    vectors and each head's wkv matrix (the head size is RWKV-7's head_dim); RWKV-4
    (`model_type` rwkv4): the two token-shift vectors and the WKV's three per-channel
    numbers (numerator, denominator, exponent). 0 for configs without these fields."""
    layers = int(model_config.get("num_hidden_layers") or 0)
    hidden = int(model_config.get("hidden_size") or 0)
    if model_type == "rwkv4" and layers and hidden:
        return layers * (2 * hidden + 3 * int(model_config.get("attention_hidden_size") or hidden)) * 4
    head = int(model_config.get("head_size") or model_config.get("head_dim") or 0)
    if not (layers and hidden and head):
        return 0
    return layers * (2 * hidden + hidden * head) * 4


# One sequence's functions (WebLLM and `mlc_llm chat` run one): the batch ones size for max_batch_size.
_SINGLE_SEQUENCE = ("embed", "prefill", "decode", "softmax_with_temperature")


def memory_figures(metadata: Mapping[str, Any], chat_config: Mapping[str, Any]) -> dict[str, int]:
    """PURE: bytes of the params, of the largest one-sequence temporary buffer and of one RNN
    state, from the library's `_metadata`: what client records size VRAM with."""
    if not metadata.get("params"):
        return {}
    usage = metadata.get("memory_usage") or {}
    figures = {
        "params_bytes": param_bytes(list(metadata["params"])),
        "temp_bytes": max((int(usage[f]) for f in _SINGLE_SEQUENCE if f in usage), default=0),
    }
    if metadata.get("kv_state_kind") == "rnn_state":
        model_type = str(chat_config.get("model_type") or "")
        figures["state_bytes"] = state_bytes(dict(chat_config.get("model_config") or {}), model_type)
    return figures


def vram_bytes(manifest: BundleManifest) -> int | None:
    """Params + the largest single-sequence temporary buffer + one RNN state, from what the
    library gate recorded; None for a bundle whose gate predates those figures."""
    library = manifest.gates.get("library")
    if not isinstance(library, dict) or "params_bytes" not in library:
        return None
    return int(library["params_bytes"]) + int(library.get("temp_bytes", 0)) + int(library.get("state_bytes", 0))


def _file(manifest: BundleManifest, name: str) -> str | None:
    return next((f.sha256 for f in manifest.files if f.path.rsplit("/", 1)[-1] == name), None)


def _library(manifest: BundleManifest) -> tuple[str, str] | None:
    entry = next((f for f in manifest.files if f.role == "library"), None)
    return (entry.path.rsplit("/", 1)[-1], entry.sha256) if entry else None


def is_webgpu(manifest: BundleManifest) -> bool:
    library = _library(manifest)
    return library is not None and library[0].endswith(".wasm")


def is_system_lib(manifest: BundleManifest) -> bool:
    library = _library(manifest)
    return library is not None and library[0].endswith(".tar")


def webllm_record(
    manifest: BundleManifest, *, repo_id: str, lib_base_url: str, hub_url: str = DEFAULT_HUB_URL
) -> dict[str, Any] | None:
    """PURE: the WebLLM ModelRecord of a WebGPU bundle (None for other targets). `model` is the
    weight repo's URL on the hub (WebLLM appends resolve/main/), `model_lib` the wasm's URL."""
    library = _library(manifest)
    if library is None or not is_webgpu(manifest):
        return None
    name, lib_sha = library
    record: dict[str, Any] = {
        "model": f"{hub_url.rstrip('/')}/{repo_id}",
        "model_id": repo_id.split("/", 1)[1],
        "model_lib": f"{lib_base_url.rstrip('/')}/{manifest.model}/{name}",
        "model_type": 0,  # ModelType.LLM
        # f16 quantizations need WebGPU's shader-f16; f32 ones run anywhere WebGPU does.
        "required_features": ["shader-f16"] if "f16" in manifest.quant else [],
        # No overrides: WebLLM takes the window sizes from the bundle's mlc-chat-config.json, and
        # 0.2.86 refuses to load a record that sets context_window_size to -1 without a sliding
        # window (WindowSizeSpecificationError; seen loading a factory bundle in Chromium).
    }
    vram = vram_bytes(manifest)
    if vram is not None:
        record["vram_required_MB"] = round(vram / _MIB, 1)
        record["low_resource_required"] = vram / _MIB <= LOW_RESOURCE_MB
    integrity: dict[str, Any] = {"model_lib": sri(lib_sha), "onFailure": "error"}
    if config := _file(manifest, "mlc-chat-config.json"):
        integrity["config"] = sri(config)
    tokenizers = {f.path.rsplit("/", 1)[-1]: sri(f.sha256) for f in manifest.files if f.role == "tokenizer"}
    if tokenizers:
        integrity["tokenizer"] = dict(sorted(tokenizers.items()))
    record["integrity"] = integrity
    return record


def web_runtime_url(manifest: BundleManifest, lib_base_url: str) -> str | None:
    """PURE: where `factory export` puts a WebGPU bundle's JS runtime (beside its library),
    for the catalog's run page; None for a bundle without one (built before bundles carried it)."""
    entry = next((f for f in manifest.files if f.role == "web-runtime"), None)
    if entry is None:
        return None
    return f"{lib_base_url.rstrip('/')}/{manifest.model}/{entry.path.rsplit('/', 1)[-1]}"


def mlc_package_entry(manifest: BundleManifest, *, repo_id: str) -> dict[str, Any] | None:
    """PURE: the `model_list` entry of `mlc-package-config.json` for a system-library bundle
    (None for other targets); `estimated_vram_bytes` is required there, so a bundle without
    the figure gets none."""
    vram = vram_bytes(manifest)
    if not is_system_lib(manifest) or vram is None:
        return None
    return {
        "model": f"HF://{repo_id}",
        "model_id": repo_id.split("/", 1)[1],
        "estimated_vram_bytes": vram,
        "bundle_weight": False,
        "model_lib": system_lib_prefix(manifest.model, manifest.quant),
    }


DEFAULT_LIBS_URL = "libs"
"""Where `model_lib` URLs point unless told: the `libs/` folder `factory export` writes beside
the weight repo, relative to the page that loads the record; publish the libraries and pass
their base URL (`factory catalog --libs-url`) for records that work anywhere."""


def client_records(
    manifest: BundleManifest, *, org: str, libs_url: str = DEFAULT_LIBS_URL, hub_url: str = DEFAULT_HUB_URL
) -> dict[str, Any]:
    """PURE: the weight repo id `factory export --repo` would default to under `org`, and the
    records this bundle's target has (WebLLM for WebGPU, with the URL of the JS runtime the
    catalog's run page loads; mlc-package for system libraries)."""
    repo_id = f"{org}/{manifest.model}-{manifest.quant}-MLC"
    records: dict[str, Any] = {"hf_repo": repo_id}
    if (web := webllm_record(manifest, repo_id=repo_id, lib_base_url=libs_url, hub_url=hub_url)) is not None:
        records["webllm"] = web
        if (runtime := web_runtime_url(manifest, libs_url)) is not None:
            records["web_runtime"] = runtime
    if (package := mlc_package_entry(manifest, repo_id=repo_id)) is not None:
        records["mlc_package"] = package
    return records
