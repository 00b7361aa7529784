"""`factory pull`: index -> bundle manifest -> blobs (parallel, resumed, verified)
-> the folder the runtime loads, made atomically from a content-addressed cache."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bundle import BUNDLE_MANIFEST, BUNDLE_PLACEHOLDER, link_or_copy, replace_folder
from .errors import UsageError
from .integrity import IntegrityError, safe_relative
from .storage.base import Store, StoreError
from .store_index import read_index
from .transfer_progress import byte_progress


@dataclass(frozen=True)
class Pulled:
    path: Path
    name: str
    version: str
    run: str
    downloaded_bytes: int


def resolve(store: Store, model: str, quant: str, target: str, version: str | None) -> tuple[str, str, dict[str, Any]]:
    index, _ = read_index(store)
    if target == "auto":
        target = auto_target(index, model, quant)
    name = f"{model}/{quant}/{target}"
    entry = index["bundles"].get(name)
    if entry is None:
        known = sorted(index["bundles"])
        raise UsageError(
            f"{store.url} has no bundle {name}",
            hint="`factory ls --store ...` lists them" + (f"; e.g. {known[0]}" if known else " (the store is empty)"),
        )
    chosen = version or entry.get("latest")
    if chosen is None:
        raise UsageError(f"every version of {name} is yanked", hint="pass --version to pull a yanked one on purpose")
    record = entry["versions"].get(chosen)
    if record is None:
        raise UsageError(f"{name} has no version {chosen}", hint=f"published: {', '.join(sorted(entry['versions']))}")
    return name, chosen, record


def auto_target(index: dict[str, Any], model: str, quant: str) -> str:
    """The target of model/quant whose device this host has, where that can be told."""
    candidates = {
        name.rsplit("/", 1)[-1]: entry
        for name, entry in index["bundles"].items()
        if name.startswith(f"{model}/{quant}/") and entry.get("latest")
    }
    wanted: str | None = None
    if sys.platform == "darwin" and platform.machine() == "arm64":
        wanted = "metal"
    elif shutil.which("nvidia-smi"):
        try:
            cap = subprocess.run(
                ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                capture_output=True, text=True, check=True, timeout=10,
            ).stdout.split()[0]  # fmt: skip
            wanted = "sm_" + cap.replace(".", "")
        except (subprocess.SubprocessError, IndexError, OSError):
            wanted = None
    if wanted is not None:
        for target, entry in sorted(candidates.items()):
            device = str(entry["versions"][entry["latest"]]["compatibility"].get("device", ""))
            if wanted in device:
                return str(target)
    raise UsageError(
        f"--target auto cannot tell which of {model}/{quant}'s targets fits this host "
        f"({sys.platform} {platform.machine()}{', ' + wanted if wanted else ''})",
        hint="pass --target; available: " + (", ".join(sorted(candidates)) or "none"),
    )


def pull(
    store: Store,
    model: str,
    quant: str,
    target: str,
    *,
    version: str | None,
    out: Path,
    cache: Path,
    jobs: int = 8,
) -> Pulled:
    name, version, record = resolve(store, model, quant, target, version)
    doc = store.get_doc(record["manifest"])
    if doc is None:
        raise StoreError(f"{store.url}/{record['manifest']}: listed in the index but missing")
    if hashlib.sha256(doc.data).hexdigest() != record["sha256"]:
        raise IntegrityError(f"{store.url}/{record['manifest']}: the bundle manifest does not match the index")
    manifest = json.loads(doc.data)
    where = f"{store.url}/{record['manifest']}"
    files = [(safe_relative(f["path"], where=where).as_posix(), f["sha256"], int(f["size"])) for f in manifest["files"]]
    blobs = {digest: size for _, digest, size in files}
    # Cached blobs were verified when they arrived; a size check catches a truncated one.
    cached = {d for d in blobs if _cache_path(cache, d).is_file() and _cache_path(cache, d).stat().st_size == blobs[d]}
    wanted = {d: s for d, s in blobs.items() if d not in cached}
    total = sum(wanted.values())
    names = {digest: path for path, digest, _ in files}
    with byte_progress(f"pull {name}", total) as advance, ThreadPoolExecutor(max_workers=jobs) as pool:
        lock = threading.Lock()

        def locked(amount: int) -> None:
            with lock:
                advance(amount)

        # Largest first: the big shards start at once and small files fill the gaps, so no
        # single large download is left running alone at the end.
        order = sorted(wanted, key=lambda d: (-wanted[d], d))
        list(pool.map(lambda d: _download(store, cache, d, wanted[d], names[d], locked), order))
    target_name = name.rsplit("/", 1)[-1]
    dest = out.resolve() / f"{model}-{quant}-{target_name}"

    def fill(tmp: Path) -> None:
        for path, digest, _ in files:
            link_or_copy(_cache_path(cache, digest), tmp / path)
        (tmp / BUNDLE_MANIFEST).write_bytes(doc.data)

    replace_folder(dest, fill)
    run = str(manifest.get("run", "")).replace(BUNDLE_PLACEHOLDER, str(dest))
    return Pulled(dest, name, version, run, total)


def _cache_path(cache: Path, digest: str) -> Path:
    return cache / "blobs" / "sha256" / digest[:2] / digest[2:]


def _download(store: Store, cache: Path, digest: str, size: int, shown: str, advance: Any) -> None:
    """Into cache/partial/<digest>.part (resumed from its length), verified, then renamed into the cache."""
    partial = cache / "partial" / f"{digest}.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    if have > size:
        partial.unlink()
        have = 0
    # Hash what an interrupted run left, then the rest as it arrives: one pass over the bytes.
    hasher = hashlib.sha256()
    if have:
        with partial.open("rb") as existing:
            while block := existing.read(1 << 22):
                hasher.update(block)
        advance(have)
    if have < size:
        store.get_blob(digest, partial, advance, hasher)
    actual = partial.stat().st_size
    if actual != size or hasher.hexdigest() != digest:
        partial.unlink()
        raise IntegrityError(
            f"{shown}: the store's bytes (blob {digest[:16]}…, {actual} bytes) do not match the manifest "
            f"(sha256 {digest[:16]}…, {size} bytes); nothing was written",
            hint=f"the store at {store.url} holds a damaged or tampered blob; republish the bundle",
        )
    final = _cache_path(cache, digest)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Pulled folders hard-link to the cache: read-only keeps an edit in a pulled folder
    # from silently changing the cached bytes for later pulls.
    os.chmod(partial, 0o444)
    os.replace(partial, final)
