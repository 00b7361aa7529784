"""Which store a store command works on, decided one way for every command:
--store (or FACTORY_STORE), else the `store:` of --matrix, else that of
manifests/world.yaml when it is here."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError
from .storage import Store, open_store

DEFAULT_MATRIX = Path("manifests/world.yaml")


def choose_store(store: str | None, endpoint_url: str | None, matrix: Path | None = None) -> Store:
    if store:
        return open_store(store, endpoint_url=endpoint_url)
    path = matrix if matrix is not None else DEFAULT_MATRIX
    if matrix is not None or path.is_file():
        from .manifest import load_manifest

        loaded = load_manifest(path)
        # A relative `store:` is relative to the manifest's root, not the working folder.
        return open_store(loaded.manifest.store, endpoint_url=endpoint_url, base=loaded.root)
    raise UsageError(
        "no store given",
        hint=f"pass --store URL, set FACTORY_STORE, or --matrix MANIFEST to use its `store:` "
        f"(default {DEFAULT_MATRIX}, when it exists)",
    )
