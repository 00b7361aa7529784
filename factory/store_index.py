"""The store's documents: bundle manifests under bundles/, release manifests under
releases/, and index.json (what is current), which is written last and only
with a conditional write, so concurrent publishers never lose each other's entries."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

from .errors import FactoryError
from .storage.base import PreconditionFailed, Store, StoreError

INDEX = "index.json"
INDEX_SCHEMA = "factory.index/v1"


def bundle_doc_key(name: str, version: str) -> str:
    """bundles/MODEL/QUANT/TARGET/VERSION.json for a bundle named MODEL/QUANT/TARGET."""
    return f"bundles/{name}/{version}.json"


def empty_index() -> dict[str, Any]:
    return {"schema": INDEX_SCHEMA, "bundles": {}, "releases": {}}


def read_index(store: Store) -> tuple[dict[str, Any], str | None]:
    doc = store.get_doc(INDEX)
    if doc is None:
        return empty_index(), None
    data: dict[str, Any] = json.loads(doc.data)
    if data.get("schema") != INDEX_SCHEMA:
        raise StoreError(f"{store.url}/{INDEX}: unknown schema {data.get('schema')!r}", hint="upgrade the factory")
    return data, doc.etag


def update_index(store: Store, change: Callable[[dict[str, Any]], None], *, attempts: int = 20) -> dict[str, Any]:
    """Read, change, write with If-Match (If-None-Match when new); on a lost race,
    read again and re-apply the change. Returns the index as written."""
    for attempt in range(attempts):
        index, etag = read_index(store)
        change(index)
        body = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
        try:
            if etag is None:
                store.put_doc(INDEX, body, if_none_match=True)
            else:
                store.put_doc(INDEX, body, if_match=etag)
            return index
        except PreconditionFailed:
            time.sleep(min(0.05 * (2**attempt), 1.0) * random.random())
    raise FactoryError(
        f"{store.url}/{INDEX}: gave up after {attempts} conflicting writes",
        hint="another publisher keeps writing the index; run the command again",
    )


def latest_version(entry: dict[str, Any]) -> str | None:
    """The newest version that is not yanked (versions are ordered by publish time)."""
    live = [(v["published_at"], name) for name, v in entry.get("versions", {}).items() if not v.get("yanked")]
    return max(live)[1] if live else None


def published_build_keys(store: Store) -> set[str]:
    """Build keys of every bundle version the index lists (a build skips those)."""
    index, _ = read_index(store)
    return {v.get("build_key") for entry in index["bundles"].values() for v in entry["versions"].values()}
