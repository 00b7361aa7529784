"""Store housekeeping: verify every byte, collect unreferenced blobs, yank versions."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .integrity import IntegrityError, safe_relative
from .storage.base import Store
from .store_index import latest_version, read_index, update_index


def referenced_blobs(store: Store) -> set[str]:
    """Every blob any bundle manifest in the store lists (yanked ones included: yank never deletes)."""
    digests: set[str] = set()
    for key in store.list_keys("bundles/"):
        doc = store.get_doc(key)
        if doc is not None:
            digests.update(f["sha256"] for f in json.loads(doc.data)["files"])
    return digests


@dataclass(frozen=True)
class GcReport:
    unreferenced: tuple[str, ...]
    deleted: bool


def gc(store: Store, *, delete: bool) -> GcReport:
    keep = referenced_blobs(store)
    blobs = {key.rsplit("/", 2)[-2] + key.rsplit("/", 1)[-1]: key for key in store.list_keys("blobs/sha256/")}
    unreferenced = tuple(sorted(d for d in blobs if d not in keep))
    if delete:
        for digest in unreferenced:
            store.delete(blobs[digest])
    return GcReport(unreferenced, delete)


def verify_store(store: Store) -> tuple[int, int]:
    """Download and hash every blob every indexed bundle lists; returns (bundles, blobs) checked."""
    index, _ = read_index(store)
    seen: set[str] = set()
    problems: list[str] = []
    bundles = 0
    with tempfile.TemporaryDirectory(prefix="factory-verify-") as tmp:
        for name, entry in sorted(index["bundles"].items()):
            for version, record in sorted(entry["versions"].items()):
                bundles += 1
                doc = store.get_doc(record["manifest"])
                if doc is None or hashlib.sha256(doc.data).hexdigest() != record["sha256"]:
                    problems.append(f"{name} {version}: manifest {record['manifest']} missing or altered")
                    continue
                for entry_file in json.loads(doc.data)["files"]:
                    safe_relative(entry_file["path"], where=f"{store.url}/{record['manifest']}")
                    digest = entry_file["sha256"]
                    if digest in seen:
                        continue
                    seen.add(digest)
                    part = Path(tmp) / digest
                    hasher = hashlib.sha256()
                    try:
                        store.get_blob(digest, part, hasher=hasher)
                    except Exception as exc:
                        problems.append(f"{name} {version}: {entry_file['path']}: {exc}")
                        continue
                    if hasher.hexdigest() != digest:
                        problems.append(f"{name} {version}: {entry_file['path']}: blob {digest[:16]}… is altered")
                    part.unlink()
    if problems:
        raise IntegrityError(f"{store.url}: " + "\n    ".join(problems), hint="republish the affected bundles")
    return bundles, len(seen)


def yank(store: Store, name: str, version: str, reason: str) -> dict[str, Any]:
    """Mark a version withdrawn; its files stay, `pull --version` still fetches it on purpose."""

    def mark(index: dict[str, Any]) -> None:
        entry = index["bundles"].get(name)
        if entry is None or version not in entry["versions"]:
            raise UsageError(f"{store.url} has no {name} version {version}", hint="`factory ls` lists them")
        entry["versions"][version].update(
            yanked=True, yank_reason=reason, yanked_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        )
        entry["latest"] = latest_version(entry)

    return update_index(store, mark)
