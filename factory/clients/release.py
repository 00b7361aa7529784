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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory import __version__
from factory.clients.client_records import client_records
from factory.clients.mlc_repo import DEFAULT_ORG
from factory.devices.runtime import runtime_words
from factory.errors import FactoryError
from factory.manifest.locked import load_locked
from factory.plan.graph import BuildGraph
from factory.plan.graph import plan as make_plan
from factory.store.backends.base import Store
from factory.store.choice import choose_store
from factory.store.documents import (
    RELEASE_SCHEMA,
    STORED_BUNDLE_FIX,
    BundleManifest,
    Index,
    IndexRecord,
    ParitySummary,
    ReleaseBundle,
    ReleaseManifest,
    ReleaseRef,
    SmokeFigures,
    parse,
    release_doc_key,
)
from factory.store.index import bundle_doc_key
from factory.store.publish import add_to_index, index_record, put_once
from factory.trust.release_signing import sign_release
from factory.trust.signing import signer_from_env

__all__ = ["RELEASE_SCHEMA", "Release", "make_release", "release_doc_key", "release_matrix", "render_notes"]


@dataclass(frozen=True)
class Release:
    key: str
    manifest: ReleaseManifest
    body: bytes
    notes: str
    signature: bytes | None = None
    """The signed envelope of `body`, when a signing key was configured."""


def make_release(store: Store, graph: BuildGraph, *, name: str, version: str) -> Release:
    bundles: list[ReleaseBundle] = []
    records: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    entries: dict[str, tuple[str, IndexRecord]] = {}
    for cell in graph.cells:
        key = bundle_doc_key(cell.cell.id, version)
        doc = store.get_doc(key)
        if doc is None:
            missing.append(cell.cell.id)
            continue
        bundle = parse(BundleManifest, doc.data, where=f"{store.url}/{key}", fix=STORED_BUNDLE_FIX)
        entries[cell.cell.id] = (version, index_record(key, doc.data, bundle))
        records[cell.cell.id] = client_records(bundle, org=DEFAULT_ORG)
        smoke, parity = bundle.gates.get("smoke"), bundle.gates.get("parity")
        figures = (
            {k: smoke.get(k) for k in ("status", "prefill_tok_s", "decode_tok_s")} if isinstance(smoke, dict) else {}
        )
        parity_figures = (
            {k: parity.get(k) for k in ("status", "kl_mean", "kl_max", "top1")} if isinstance(parity, dict) else {}
        )
        bundles.append(
            ReleaseBundle(
                name=cell.cell.id,
                manifest=key,
                sha256=hashlib.sha256(doc.data).hexdigest(),
                size=bundle.size,
                files=len(bundle.files),
                compatibility=bundle.compatibility,
                smoke=SmokeFigures.model_validate(figures),
                gates={
                    gate: str(result.get("status"))
                    for gate, result in sorted(bundle.gates.items())
                    if isinstance(result, dict)
                },
                parity=ParitySummary.model_validate(parity_figures),
            )
        )
    if missing:
        shown = "\n    ".join(missing)
        raise FactoryError(
            f"{len(missing)} cell(s) of release {name} {version} have no bundle in {store.url}:\n    {shown}",
            hint="build and publish them first (`factory build --store ...` or the release workflow's build jobs)",
        )
    manifest = ReleaseManifest.model_validate(
        {
            "schema": RELEASE_SCHEMA,
            "name": name,
            "version": version,
            "factory_version": __version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "bundles": [b.to_data() for b in bundles],
        }
    )
    key = release_doc_key(name, version)
    existing = store.get_doc(key)
    old = parse(ReleaseManifest, existing.data, where=f"{store.url}/{key}") if existing is not None else None
    if existing is not None and old is not None and old.to_data()["bundles"] == manifest.to_data()["bundles"]:
        manifest, body = old, existing.data  # rerun of a finished release: keep it
    else:
        body = manifest.body()
        put_once(store, key, body, name, version)
    signer = signer_from_env()
    signature = sign_release(store, key, body, signer) if signer is not None else None

    def add_release(index: Index) -> Index:
        return index.with_release(name, version, ReleaseRef(manifest=key, sha256=hashlib.sha256(body).hexdigest()))

    add_to_index(store, entries, extra=add_release)
    return Release(key, manifest, body, render_notes(manifest, records), signature)


def render_notes(manifest: ReleaseManifest, records: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Markdown: one row per bundle with size, sha256 and smoke figures where measured."""
    lines = [
        f"## {manifest.name} {manifest.version}",
        "",
        f"{len(manifest.bundles)} bundles, built by factory {manifest.factory_version}.",
        "",
        "| bundle | flow | size (MB) | manifest sha256 | gates not passed | smoke | prefill tok/s | decode tok/s "
        "| parity KL mean | parity top-1 |",
        "|---|---|---:|---|---|---|---:|---:|---:|---:|",
    ]

    def figure(value: float | None, digits: str = ".1f") -> str:
        return format(value, digits) if value is not None else "-"

    for bundle in manifest.bundles:
        smoke, parity = bundle.smoke, bundle.parity
        # A gate that did not run is shown by name: it is not a pass.
        open_gates = ", ".join(f"{g}: {s}" for g, s in bundle.gates.items() if s != "passed") or "-"
        lines.append(
            f"| `{bundle.name}` | {bundle.compatibility.flow} | {bundle.size / 1e6:.1f} | "
            f"`{bundle.sha256[:16]}` | {open_gates} | {smoke.status or 'n/a'} | "
            f"{figure(smoke.prefill_tok_s)} | {figure(smoke.decode_tok_s)} | "
            f"{figure(parity.kl_mean, '.2g')} | {figure(parity.top1, '.2f')} |"
        )
    lines += ["", f"Pull one with `factory pull MODEL --quant Q --target T --version {manifest.version}`."]
    # The runtime each bundle needs, in words: the line a user checks their install against.
    runtimes: dict[str, list[str]] = {}
    for bundle in manifest.bundles:
        runtimes.setdefault(runtime_words(bundle.compatibility.to_data()), []).append(bundle.name)
    lines += ["", "### Runtimes", ""]
    lines += [f"- {words}: {', '.join(f'`{n}`' for n in names)}" for words, names in runtimes.items()]
    clients = {name: r for name, r in (records or {}).items() if "webllm" in r or "mlc_package" in r}
    if clients:
        lines += ["", "### Client records", ""]
        for name, record in clients.items():
            shown = {k: v for k, v in record.items() if k in ("webllm", "mlc_package")}
            lines += [f"`{name}`:", "", "```json", json.dumps(shown, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def release_matrix(
    matrix: Path, *, store: str | None, endpoint_url: str | None, only: tuple[str, ...] = (),
    notes: Path | None = None, output_file: Path | None = None,
) -> tuple[Release, str]:  # fmt: skip
    """`factory release` as one call: the release named in the manifest, from the store
    (--store, else the manifest's); also writes the notes and the manifest (with its
    signature beside it as NAME.signed.json) where asked. Gives the release and its URL."""
    loaded, lock = load_locked(matrix, require_locked=False)
    graph = make_plan(loaded, lock, only=only)
    target = choose_store(store, endpoint_url, matrix)
    info = loaded.manifest.release
    made = make_release(target, graph, name=info.name, version=info.version)
    if notes is not None:
        notes.write_text(made.notes)
    if output_file is not None:
        output_file.parent.mkdir(parents=True, exist_ok=True)
        output_file.write_bytes(made.body)
        if made.signature is not None:
            output_file.with_name(output_file.stem + ".signed.json").write_bytes(made.signature)
    return made, f"{target.url}/{made.key}"
