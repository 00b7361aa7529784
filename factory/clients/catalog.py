"""`factory catalog`: what a store holds, as a static site (factory/clients/catalog_page.py renders
the HTML; the entries here are its JSON). Read through the same trust checks as pull."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from factory.clients.catalog_page import render_page
from factory.clients.client_records import DEFAULT_HUB_URL, DEFAULT_LIBS_URL, client_records
from factory.clients.mlc_repo import DEFAULT_ORG
from factory.clients.run_page import RUN_PAGE, SESSION_SCRIPT
from factory.devices.runtime import runtime_words
from factory.errors import LocalDiskError
from factory.store.backends.base import Store
from factory.store.bundle_folder import BUNDLE_PLACEHOLDER
from factory.store.documents import BundleManifest, IndexRecord
from factory.store.index import read_bundle_manifest
from factory.trust.policy import Trust, open_index

CATALOG_SCHEMA = "factory.catalog/v1"


@dataclass(frozen=True, kw_only=True)
class CatalogEntry:
    name: str
    model: str
    quant: str
    target: str
    version: str
    latest: bool
    size: int
    flow: str
    device: str
    compatibility_key: str
    compatibility: dict[str, object]
    gates: dict[str, str]
    prefill_tok_s: float | None
    decode_tok_s: float | None
    parity_kl_mean: float | None
    parity_top1: float | None
    published_at: str
    yanked: bool
    yank_reason: str | None
    pull: str
    run: str
    runtime: str
    """The runtime that loads it, in words (the compatibility key says the same for machines)."""
    records: dict[str, object]
    """hf_repo (the `factory export` repo id), and where the target has one, the WebLLM
    ModelRecord (`webllm`) and the mlc-package-config.json model_list entry (`mlc_package`)."""


@dataclass(frozen=True)
class Catalog:
    store: str
    signed: bool
    entries: tuple[CatalogEntry, ...]

    def to_json(self) -> str:
        data = {"schema": CATALOG_SCHEMA, "store": self.store, "signed": self.signed,
                "entries": [asdict(e) for e in self.entries]}  # fmt: skip
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _figure(gate: object, key: str) -> float | None:
    value = gate.get(key) if isinstance(gate, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _entry(
    store_url: str, version: str, latest: bool, record: IndexRecord, manifest: BundleManifest, names: ClientNames
) -> CatalogEntry:
    compat = manifest.compatibility.to_data()
    folder = f"./{manifest.model}-{manifest.quant}-{manifest.target}"
    pin = "" if latest else f" --version {version}"
    return CatalogEntry(
        name=manifest.name, model=manifest.model, quant=manifest.quant, target=manifest.target, version=version,
        latest=latest, size=manifest.size, flow=manifest.compatibility.flow, device=manifest.compatibility.device,
        compatibility_key=hashlib.sha256(json.dumps(compat, sort_keys=True).encode()).hexdigest()[:16],
        compatibility=compat,
        gates={g: str(r.get("status")) for g, r in sorted(manifest.gates.items()) if isinstance(r, dict)},
        prefill_tok_s=_figure(manifest.gates.get("smoke"), "prefill_tok_s"),
        decode_tok_s=_figure(manifest.gates.get("smoke"), "decode_tok_s"),
        parity_kl_mean=_figure(manifest.gates.get("parity"), "kl_mean"),
        parity_top1=_figure(manifest.gates.get("parity"), "top1"),
        published_at=record.published_at, yanked=record.yanked, yank_reason=record.yank_reason,
        pull=f"factory pull {manifest.model} --quant {manifest.quant} --target {manifest.target}{pin} "
        f"--store {store_url} --out .",
        run=manifest.run.replace(BUNDLE_PLACEHOLDER, folder),
        runtime=runtime_words(compat),
        records=client_records(manifest, org=names.org, libs_url=names.libs_url, hub_url=names.hub_url),
    )  # fmt: skip


@dataclass(frozen=True)
class ClientNames:
    """How the catalog's client records name what `factory export` publishes."""

    org: str = DEFAULT_ORG
    libs_url: str = DEFAULT_LIBS_URL
    hub_url: str = DEFAULT_HUB_URL


def build_catalog(store: Store, trust: Trust | None = None, names: ClientNames | None = None) -> Catalog:
    index = open_index(store, trust)
    names = names or ClientNames()
    entries = []
    for name, entry in sorted(index.bundles.items()):
        for version, record in sorted(entry.versions.items(), key=lambda kv: kv[1].published_at):
            manifest, _ = read_bundle_manifest(store, name, version, record)
            entries.append(
                _entry(store.url, version, entry.latest == version, record, manifest, names or ClientNames())
            )
    return Catalog(store.url, index.version is not None, tuple(entries))


def _files(catalog: Catalog) -> dict[str, bytes]:
    data = catalog.to_json()
    return {
        "catalog.json": data.encode(),
        "index.html": render_page(data).encode(),
        "run.html": RUN_PAGE.encode(),
        SESSION_SCRIPT.name: SESSION_SCRIPT.read_bytes(),
    }


def write_catalog(catalog: Catalog, out: Path) -> tuple[Path, Path]:
    """DIR/index.html (which embeds its data, so it works from file://), DIR/catalog.json,
    DIR/run.html (the page that runs a WebGPU bundle in the visitor's browser) and the
    webgpu_session.js it loads; each written to a temporary file and renamed, so a reader
    never sees half a page."""
    files = {out / name: body for name, body in _files(catalog).items()}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path, body in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=out)
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    except OSError as exc:
        message = f"{out}: cannot write the catalog: {exc.strerror or exc}"
        raise LocalDiskError(message, hint="choose a writable -o DIR") from None
    return out / "index.html", out / "catalog.json"


def publish_catalog(catalog: Catalog, store: Store) -> list[str]:
    """The same files under catalog/ in the store (for a bucket's static website)."""
    keys = {f"catalog/{name}": body for name, body in _files(catalog).items()}
    for key, body in keys.items():
        store.put_doc(key, body)
    return sorted(keys)


def make_catalog(
    store: Store, trust: Trust | None, out: Path, *, publish: bool, names: ClientNames | None = None
) -> list[str]:
    """`factory catalog`: build, write to `out`, optionally publish into the store; what to print."""
    made = build_catalog(store, trust, names)
    page, _ = write_catalog(made, out)
    lines = [f"{len(made.entries)} bundle version(s): {page}"]
    if publish:
        lines += [f"published {store.url}/{key}" for key in publish_catalog(made, store)]
    return lines
