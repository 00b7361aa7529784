"""Bundles: a cell's params, tokenizer and library in the layout its runtime
loads, plus a schema-versioned manifest of every file, its provenance and the
compatibility key a client matches against its runtime."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from factory.errors import FactoryError
from factory.store.documents import BUNDLE_MANIFEST, BUNDLE_SCHEMA, BundleFile, BundleManifest, read_file
from factory.toolchains.base import web_runtime_name

CHAT_CONFIG = "mlc-chat-config.json"
TOKENIZER = "tokenizer_model"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_FILES = (TOKENIZER, TOKENIZER_JSON)
"""RWKV World's own file (mlc-llm's RWKV tokenizer) and the same vocab as Hugging Face JSON."""
B16_INDEX = "tensor-cache-b16.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def assemble(
    dest: Path,
    *,
    params_source: Path,
    params_dir: str,
    params_index: str,
    library: Path,
    library_name: str,
    tokenizer_dir: Path,
    tokenizer_files: Sequence[str] = (TOKENIZER,),
    web_runtime: Path | None = None,
) -> None:
    """Lay out a bundle in `dest` (a new folder): params, index and chat config from the
    conversion, our tokenizer files beside them (listed in tokenizer_files, which neither
    MLC flow does for RWKV World), the library, and beside a WebGPU library the JS runtime
    that loads it (`web_runtime`)."""
    params = dest / params_dir if params_dir else dest
    params.mkdir(parents=True, exist_ok=True)
    index = json.loads((params_source / params_index).read_text())
    wanted = {params_index, CHAT_CONFIG} | {shard["dataPath"] for shard in index.get("records", [])}
    # convert_weight also writes a bf16 record of the same shards (float32 params as
    # bfloat16), which runtimes without float32 support read; it travels with them.
    wanted.add(B16_INDEX)
    for name in sorted(wanted):
        source = params_source / name
        if name != CHAT_CONFIG and source.is_file():
            link_or_copy(source, params / name)
    config_path = params_source / CHAT_CONFIG
    if not config_path.is_file():
        raise FactoryError(f"the conversion wrote no {CHAT_CONFIG} in {params_source}")
    config = json.loads(config_path.read_text())
    files = list(config.get("tokenizer_files") or [])
    for name in tokenizer_files:
        if not (tokenizer_dir / name).is_file():
            raise FactoryError(f"the tokenizer step wrote no {name} in {tokenizer_dir}")
        shutil.copyfile(tokenizer_dir / name, params / name)
        if name not in files:
            files.append(name)
    config["tokenizer_files"] = files
    if TOKENIZER_JSON in files:
        # mlc-llm loads tokenizer.json before tokenizer_model (cpp/tokenizers/tokenizers.cc,
        # Tokenizer::FromPath), and WebLLM reads only it: its tokens are byte-level strings,
        # so stop strings and grammars must post-process them as such.
        info = dict(config.get("tokenizer_info") or {})
        info["token_postproc_method"] = "byte_level"
        config["tokenizer_info"] = info
    (params / CHAT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    link_or_copy(library, dest / library_name)
    if web_runtime is not None:
        link_or_copy(web_runtime, dest / web_runtime_name(library_name))


def role_of(relative: str, params_index: str, library_name: str) -> str:
    name = relative.rsplit("/", 1)[-1]
    if relative == library_name:
        return "library"
    if relative == web_runtime_name(library_name):
        return "web-runtime"
    if name.startswith("params_shard_"):
        return "params-shard"
    named = {params_index: "params-index", B16_INDEX: "params-index-b16", CHAT_CONFIG: "chat-config"}
    return named.get(name, "tokenizer" if name in TOKENIZER_FILES else "other")


def describe(bundle: Path, params_index: str, library_name: str) -> list[BundleFile]:
    out = []
    for path in sorted(p for p in bundle.rglob("*") if p.is_file() and p.name != BUNDLE_MANIFEST):
        relative = path.relative_to(bundle).as_posix()
        role = role_of(relative, params_index, library_name)
        out.append(BundleFile(path=relative, role=role, size=path.stat().st_size, sha256=sha256_file(path)))
    return out


def bundle_manifest(
    *,
    cell: Mapping[str, str],
    files: list[BundleFile],
    compatibility: Mapping[str, Any],
    provenance: Mapping[str, Any],
    gates: Mapping[str, Any],
    run: str,
) -> BundleManifest:
    """The bundle's manifest, checked like any stored one: a build never writes a
    manifest that publish or pull would refuse."""
    return BundleManifest.model_validate(
        {
            "schema": BUNDLE_SCHEMA,
            **cell,
            "files": [f.to_data() for f in files],
            "compatibility": dict(compatibility),
            "provenance": dict(provenance),
            "gates": dict(gates),
            "run": run,
        }
    )


def write_manifest(bundle: Path, manifest: BundleManifest) -> None:
    tmp = bundle / f".{BUNDLE_MANIFEST}.tmp"
    tmp.write_bytes(manifest.body())
    os.replace(tmp, bundle / BUNDLE_MANIFEST)


def read_manifest(bundle: Path, *, fix: str | None = None) -> BundleManifest:
    """A bundle folder's manifest; a DocumentError (exit 4) when it is missing or malformed."""
    return read_file(BundleManifest, bundle / BUNDLE_MANIFEST, fix=fix)


BUNDLE_PLACEHOLDER = "{bundle}"


def run_command(flow: str, params_dir: str, library_name: str, device_kind: str) -> str:
    """The command that runs a bundle with its generation's runtime; `{bundle}`
    stands for wherever the bundle folder ends up (pull fills it in)."""
    bundle_dir = BUNDLE_PLACEHOLDER
    if device_kind in ("llvm", "vulkan"):
        # CPU and Vulkan bundles run through TVM's Relax VM in their toolchain (factory/in_toolchain/vm_script.py).
        return f"factory run {bundle_dir} --prompt 'Hello'"
    if device_kind == "webgpu":
        # A browser runs it: WebLLM (or TVM's JS runtime) fetches both over HTTP.
        return f"serve {bundle_dir} over HTTP; WebLLM model: {bundle_dir}/, model_lib: {bundle_dir}/{library_name}"
    if flow == "legacy":
        # mlc-llm b44cdc53's runtime package is mlc_chat: `python -m mlc_chat chat MODEL --model-lib-path`.
        return (
            f"python -m mlc_chat chat {bundle_dir}/{params_dir} "
            f"--model-lib-path {bundle_dir}/{library_name} --device {device_kind}"
        )
    return f"mlc_llm chat {bundle_dir} --model-lib {bundle_dir}/{library_name} --device {device_kind}"


def replace_folder(dest: Path, fill: Callable[[Path], None]) -> None:
    """Make `dest` by filling a temporary sibling and renaming it into place, so a
    reader sees the old folder or the new one, never a half-made one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        fill(tmp)
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(dest, old)
            os.rename(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
