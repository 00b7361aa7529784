"""A bundle where MLC users look for models: the folder a Hugging Face MLC weight repo
holds (mlc-ai/*-MLC: config, params index, shards, tokenizer files) with a model card
that carries the factory's provenance, and the library apart, named the way
binary-mlc-llm-libs names libraries (`{model}/{model}-{quant}-{platform}.{suffix}`).

`factory export` writes both from a verified bundle folder (uploading is then
`hf upload ORG/REPO FOLDER`); `factory pull --mlc-cache DIR` writes them where mlc-llm's
own `HF://ORG/REPO` resolution looks first, `$MLC_LLM_READONLY_WEIGHT_CACHE/hf/ORG/REPO`
(mlc_llm/support/download_cache.py), so `mlc_llm chat HF://ORG/REPO` runs offline.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from factory.devices.runtime import runtime_words
from factory.errors import UsageError
from factory.store.bundle_folder import link_or_copy, replace_folder
from factory.store.documents import BundleManifest
from factory.store.verify import verified_manifest

DEFAULT_ORG = "factory"  # also client_records: one default namespace
"""The namespace of the repo id when none is given: `factory/{model}-{quant}-MLC`."""
MODEL_CARD = "README.md"
LIBRARY_ROLES = ("library", "web-runtime")
"""Files kept apart from the weight repo, under libs/: the library, and a WebGPU library's JS runtime."""
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ExportedRepo:
    repo_id: str
    weights: Path
    """The weight repo folder: what `hf upload` sends, and what mlc-llm loads."""
    library: Path
    files: tuple[tuple[str, int, str], ...]
    """(name, bytes, sha256) of every file in the weight repo but the model card."""


def default_repo_id(manifest: BundleManifest) -> str:
    return f"{DEFAULT_ORG}/{manifest.model}-{manifest.quant}-MLC"


def check_repo_id(repo_id: str) -> str:
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise UsageError(
            f"{repo_id!r} is not a Hugging Face repo id",
            hint="write it as ORG/NAME, e.g. my-org/rwkv-6-world-1b6-q4f16_1-MLC",
        )
    return repo_id


def library_path(manifest: BundleManifest, library: str) -> str:
    """Where binary-mlc-llm-libs would keep it: a folder per model. Our library names are
    already `{model}-{quant}-{target}.{suffix}`, their `{model}-{quant}-{platform}`."""
    return f"{manifest.model}/{library}"


def export_bundle(bundle: Path, out: Path, repo_id: str | None, *, hf_cache: bool = False) -> ExportedRepo:
    """From a bundle folder whose every byte is checked first, write the weight repo (replaced
    whole, never half-written) as `out/NAME`, or with `hf_cache` where mlc-llm resolves it,
    `out/hf/ORG/NAME`; and the library under `out/libs`. `repo_id` defaults to
    factory/MODEL-QUANT-MLC."""
    manifest = verified_manifest(bundle)
    repo_id = check_repo_id(repo_id or default_repo_id(manifest))
    weights = out / "hf" / repo_id if hf_cache else out / repo_id.split("/", 1)[1]
    libraries = out / "libs"
    library = next((f for f in manifest.files if f.role == "library"), None)
    if library is None:
        raise UsageError(f"{bundle}: the bundle lists no library", hint="pull or rebuild it")
    # The params folder's files keep their names: mlc-chat-config.json, the index, the
    # shards and tokenizer files lie side by side in a weight repo.
    repo_files = [f for f in manifest.files if f.role not in LIBRARY_ROLES]
    names = [f.path.rsplit("/", 1)[-1] for f in repo_files]
    if len(set(names)) != len(names):
        raise UsageError(f"{bundle}: two files share a name", hint="this bundle cannot be laid out flat")
    listed = tuple((name, f.size, f.sha256) for name, f in sorted(zip(names, repo_files, strict=True)))
    lib_rel = library_path(manifest, library.path.rsplit("/", 1)[-1])

    def fill(tmp: Path) -> None:
        for name, entry in zip(names, repo_files, strict=True):
            link_or_copy(bundle / entry.path, tmp / name)
        (tmp / MODEL_CARD).write_text(model_card(manifest, repo_id, listed, lib_rel), encoding="utf-8")

    replace_folder(weights, fill)
    library_dest = libraries / lib_rel
    library_dest.parent.mkdir(parents=True, exist_ok=True)
    # A WebGPU library's JS runtime lies beside it, as the page that loads both expects.
    runtimes = [f for f in manifest.files if f.role == "web-runtime"]
    for entry in (*runtimes, library):
        dest = library_dest.with_name(entry.path.rsplit("/", 1)[-1])
        staged = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            link_or_copy(bundle / entry.path, staged)
            os.replace(staged, dest)
        finally:
            staged.unlink(missing_ok=True)
    return ExportedRepo(repo_id=repo_id, weights=weights, library=library_dest, files=listed)


def _figures(manifest: BundleManifest) -> list[str]:
    lines = []
    for gate, result in sorted(manifest.gates.items()):
        if not isinstance(result, dict):
            continue
        status = result.get("status")
        extra = ""
        if gate == "smoke" and status == "passed":
            extra = f": prefill {result.get('prefill_tok_s')} tok/s, decode {result.get('decode_tok_s')} tok/s"
        elif gate == "parity" and status == "passed":
            extra = f": KL mean {result.get('kl_mean')}, top-1 {result.get('top1')} against the `rwkv` reference"
        elif status != "passed" and result.get("reason"):
            extra = f" ({result.get('reason')})"
        lines.append(f"- {gate}: {status}{extra}")
    return lines


def model_card(manifest: BundleManifest, repo_id: str, files: tuple[tuple[str, int, str], ...], library: str) -> str:
    """PURE: the weight repo's README: what it is, what loads it, how it was built and
    checked, and the sha256 of every file (Hugging Face shows md5 of nothing)."""
    provenance = manifest.provenance
    pins = provenance.get("pins", {}) if isinstance(provenance.get("pins"), dict) else {}
    model = provenance.get("model", {})
    front = {
        "library_name": "mlc-llm",
        "tags": ["mlc-llm", "rwkv", manifest.quant, manifest.target],
        "base_model_relation": "quantized",
    }
    lines = [
        "---",
        *(f"{k}: {json.dumps(v)}" for k, v in front.items()),
        "---",
        "",
        f"# {repo_id.split('/', 1)[1]}",
        "",
        f"{manifest.model} quantized as {manifest.quant} for {manifest.target} "
        f"({manifest.compatibility.device}), built and checked by the factory.",
        "",
        "## Runtime",
        "",
        runtime_words(manifest.compatibility.to_data()),
        "",
        f"Library (kept apart, as binary-mlc-llm-libs keeps them): `{library}`.",
        "",
        "```bash",
        f"mlc_llm chat HF://{repo_id} --model-lib {library}",
        "```",
        "",
        "## Provenance",
        "",
        f"- model: {json.dumps(model, sort_keys=True)}",
        f"- mlc-llm: {json.dumps(pins.get('mlc_llm'), sort_keys=True)}",
        f"- TVM: {json.dumps(pins.get('tvm'), sort_keys=True)}",
        f"- toolchain: {provenance.get('toolchain')}, image {provenance.get('image')}",
        f"- build key: `{provenance.get('build_key')}`",
        f"- release: {json.dumps(provenance.get('release'), sort_keys=True)}",
        "",
        "## Gates",
        "",
        *_figures(manifest),
        "",
        "## Files (sha256)",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
        *(f"| {name} | {size} | `{digest}` |" for name, size, digest in files),
        "",
    ]
    return "\n".join(lines)
