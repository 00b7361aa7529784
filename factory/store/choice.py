"""Which store a store command works on, decided one way for every command:
--store (or FACTORY_STORE), else the `store:` of --matrix, else that of
manifests/world.yaml when it is here."""

from __future__ import annotations

from pathlib import Path

from factory.errors import UsageError
from factory.store.backends import Store, open_store

DEFAULT_MATRIX = Path("manifests/world.yaml")


def choose_store(
    store: str | None, endpoint_url: str | None, matrix: Path | None = None, *, create: bool = False
) -> Store:
    """The store to work on. Only a command that may make a store (`create`: publish)
    accepts a local folder that does not exist; for any other, it is a mistyped path."""
    chosen = _open(store, endpoint_url, matrix)
    if not create:
        from factory.store.backends.local import LocalStore

        if isinstance(chosen, LocalStore) and not chosen.root.is_dir():
            raise UsageError(
                f"no store at {chosen.root}",
                hint="check the path given by --store, FACTORY_STORE or the manifest's `store:`; "
                "a folder store is made by the first `factory publish` to it",
            )
    return chosen


def _open(store: str | None, endpoint_url: str | None, matrix: Path | None) -> Store:
    if store:
        return open_store(store, endpoint_url=endpoint_url)
    path = matrix if matrix is not None else DEFAULT_MATRIX
    if matrix is not None or path.is_file():
        from factory.manifest.load import load_manifest

        loaded = load_manifest(path)
        # A relative `store:` is relative to the manifest's root, not the working folder.
        return open_store(loaded.manifest.store, endpoint_url=endpoint_url, base=loaded.root)
    raise UsageError(
        "no store given",
        hint=f"pass --store URL, set FACTORY_STORE, or --matrix MANIFEST to use its `store:` "
        f"(default {DEFAULT_MATRIX}, when it exists)",
    )
