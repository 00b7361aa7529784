"""Bundles: a cell's params, tokenizer and library in the layout its runtime
loads, plus a schema-versioned manifest of every file, its provenance and the
compatibility key a client matches against its runtime."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import FactoryError

BUNDLE_MANIFEST = "factory-bundle.json"
SCHEMA = "factory.bundle/v1"
CHAT_CONFIG = "mlc-chat-config.json"
TOKENIZER = "tokenizer_model"
B16_INDEX = "tensor-cache-b16.json"


@dataclass(frozen=True)
class BundleFile:
    path: str
    role: str
    size: int
    sha256: str


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
    tokenizer: Path,
) -> None:
    """Lay out a bundle in `dest` (a new folder): params, index and chat config
    from the conversion, our tokenizer_model beside them (listed in
    tokenizer_files, which neither MLC flow does for RWKV World), the library."""
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
    if TOKENIZER not in files:
        files.append(TOKENIZER)
    config["tokenizer_files"] = files
    (params / CHAT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(tokenizer, params / TOKENIZER)
    link_or_copy(library, dest / library_name)


def role_of(relative: str, params_index: str, library_name: str) -> str:
    name = relative.rsplit("/", 1)[-1]
    if relative == library_name:
        return "library"
    if name.startswith("params_shard_"):
        return "params-shard"
    named = {params_index: "params-index", B16_INDEX: "params-index-b16", CHAT_CONFIG: "chat-config"}
    return named.get(name, "tokenizer" if name == TOKENIZER else "other")


def describe(bundle: Path, params_index: str, library_name: str) -> list[BundleFile]:
    out = []
    for path in sorted(p for p in bundle.rglob("*") if p.is_file() and p.name != BUNDLE_MANIFEST):
        relative = path.relative_to(bundle).as_posix()
        out.append(
            BundleFile(relative, role_of(relative, params_index, library_name), path.stat().st_size, sha256_file(path))
        )
    return out


def bundle_manifest(
    *,
    cell: Mapping[str, str],
    files: list[BundleFile],
    compatibility: Mapping[str, Any],
    provenance: Mapping[str, Any],
    gates: Mapping[str, Any],
    run: str,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        **cell,
        "files": [asdict(f) for f in files],
        "compatibility": dict(compatibility),
        "provenance": dict(provenance),
        "gates": dict(gates),
        "run": run,
    }


def write_manifest(bundle: Path, manifest: Mapping[str, Any]) -> None:
    tmp = bundle / f".{BUNDLE_MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, bundle / BUNDLE_MANIFEST)


def read_manifest(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((bundle / BUNDLE_MANIFEST).read_text())
    return data


BUNDLE_PLACEHOLDER = "{bundle}"


def run_command(flow: str, params_dir: str, library_name: str, device_kind: str) -> str:
    """The command that runs a bundle with its generation's runtime; `{bundle}`
    stands for wherever the bundle folder ends up (pull fills it in)."""
    bundle_dir = BUNDLE_PLACEHOLDER
    if device_kind == "llvm":
        # CPU bundles run through TVM's Relax VM in their toolchain (factory/vm_script.py).
        return f"factory run {bundle_dir} --prompt 'Hello'"
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
