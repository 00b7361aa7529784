"""`factory release`: the final step of a release, locally or in the workflow.

Every cell of the plan must have its bundle manifest in the store at the
manifest's release version (the build jobs published blobs and manifests);
then the release manifest is written (immutable), the index gets every bundle
and the release in one conditional write, and the notes table is rendered.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from . import __version__
from .errors import FactoryError
from .plan import BuildGraph
from .publish import add_to_index, index_record, put_once
from .storage.base import Store
from .store_index import bundle_doc_key

RELEASE_SCHEMA = "factory.release/v1"


@dataclass(frozen=True)
class Release:
    key: str
    manifest: dict[str, Any]
    body: bytes
    notes: str


def release_doc_key(name: str, version: str) -> str:
    return f"releases/{name}/{version}.json"


def make_release(store: Store, graph: BuildGraph, *, name: str, version: str) -> Release:
    bundles: list[dict[str, Any]] = []
    missing: list[str] = []
    entries: dict[str, tuple[str, dict[str, Any]]] = {}
    for cell in graph.cells:
        key = bundle_doc_key(cell.cell.id, version)
        doc = store.get_doc(key)
        if doc is None:
            missing.append(cell.cell.id)
            continue
        manifest = json.loads(doc.data)
        entries[cell.cell.id] = (version, index_record(key, doc.data, manifest))
        gate_docs = manifest.get("gates", {})
        smoke = gate_docs.get("smoke", {})
        parity = gate_docs.get("parity", {})
        bundles.append(
            {
                "name": cell.cell.id,
                "manifest": key,
                "sha256": hashlib.sha256(doc.data).hexdigest(),
                "size": sum(int(f["size"]) for f in manifest["files"]),
                "files": len(manifest["files"]),
                "compatibility": manifest["compatibility"],
                "smoke": {k: smoke.get(k) for k in ("status", "prefill_tok_s", "decode_tok_s")},
                "gates": {gate: doc.get("status") for gate, doc in sorted(gate_docs.items())},
                "parity": {k: parity.get(k) for k in ("status", "kl_mean", "kl_max", "top1")},
            }
        )
    if missing:
        shown = "\n    ".join(missing)
        raise FactoryError(
            f"{len(missing)} cell(s) of release {name} {version} have no bundle in {store.url}:\n    {shown}",
            hint="build and publish them first (`factory build --store ...` or the release workflow's build jobs)",
        )
    manifest = {
        "schema": RELEASE_SCHEMA,
        "name": name,
        "version": version,
        "factory_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundles": bundles,
    }
    key = release_doc_key(name, version)
    existing = store.get_doc(key)
    if existing is not None and _same_bundles(json.loads(existing.data), manifest):
        manifest, body = json.loads(existing.data), existing.data  # rerun of a finished release: keep it
    else:
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        put_once(store, key, body, name, version)

    def add_release(index: dict[str, Any]) -> None:
        entry = index.setdefault("releases", {}).setdefault(name, {"versions": {}})
        entry["versions"][version] = {"manifest": key, "sha256": hashlib.sha256(body).hexdigest()}
        entry["latest"] = version

    add_to_index(store, entries, extra=add_release)
    return Release(key, manifest, body, render_notes(manifest))


def _same_bundles(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return bool(old.get("bundles") == new.get("bundles"))


def render_notes(manifest: dict[str, Any]) -> str:
    """Markdown: one row per bundle with size, sha256 and smoke figures where measured."""
    lines = [
        f"## {manifest['name']} {manifest['version']}",
        "",
        f"{len(manifest['bundles'])} bundles, built by factory {manifest['factory_version']}.",
        "",
        "| bundle | flow | size (MB) | manifest sha256 | gates not passed | smoke | prefill tok/s | decode tok/s "
        "| parity KL mean | parity top-1 |",
        "|---|---|---:|---|---|---|---:|---:|---:|---:|",
    ]

    def figure(value: Any, digits: str = ".1f") -> str:
        return format(value, digits) if isinstance(value, (int, float)) else "-"

    for bundle in manifest["bundles"]:
        smoke, parity = bundle["smoke"], bundle.get("parity") or {}
        # A gate that did not run is shown by name: it is not a pass.
        open_gates = ", ".join(f"{g}: {s}" for g, s in (bundle.get("gates") or {}).items() if s != "passed") or "-"
        lines.append(
            f"| `{bundle['name']}` | {bundle['compatibility'].get('flow', '?')} | {bundle['size'] / 1e6:.1f} | "
            f"`{bundle['sha256'][:16]}` | {open_gates} | {smoke.get('status') or 'n/a'} | "
            f"{figure(smoke.get('prefill_tok_s'))} | {figure(smoke.get('decode_tok_s'))} | "
            f"{figure(parity.get('kl_mean'), '.2g')} | {figure(parity.get('top1'), '.2f')} |"
        )
    lines += ["", f"Pull one with `factory pull MODEL --quant Q --target T --version {manifest['version']}`."]
    return "\n".join(lines) + "\n"
