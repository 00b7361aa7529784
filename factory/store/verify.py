"""`factory verify`: every byte of one bundle folder against its manifest, or every
blob of a store against the manifests that reference it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from factory.errors import UsageError
from factory.store.choice import choose_store
from factory.store.documents import BUNDLE_MANIFEST, BundleManifest, read_file
from factory.store.integrity import check_bundle_dir
from factory.trust.policy import load_trust


@dataclass(frozen=True)
class Verified:
    """What was checked: a bundle folder's files, or a store's bundles and blobs."""

    folder: Path | None = None
    files: int = 0
    store_url: str | None = None
    bundles: int = 0
    blobs: int = 0


def verified_manifest(path: Path, *, given: str | None = None) -> BundleManifest:
    """A bundle folder's manifest, after every file was checked against it; raises on the
    first file that does not match. `given` is the folder as the user typed it, for the error."""
    if not path.is_dir():
        raise UsageError(
            f"{given or path}: no such bundle folder",
            hint="give a folder `factory pull` or `factory build` made, or check a store with --store URL",
        )
    if not (path / BUNDLE_MANIFEST).is_file():
        raise UsageError(
            f"{path} is not a bundle folder (no {BUNDLE_MANIFEST})",
            hint="give a folder `factory pull` or `factory build` made; check a store with --store URL",
        )
    manifest = read_file(BundleManifest, path / BUNDLE_MANIFEST, fix=f"pull or rebuild {path}; do not edit it")
    check_bundle_dir(path, manifest)
    return manifest


def verify_folder(path: Path, *, given: str | None = None) -> int:
    """The number of files checked (see verified_manifest)."""
    return len(verified_manifest(path, given=given).files)


def verify(
    what: str | None, *, store: str | None, endpoint_url: str | None, matrix: Path | None, trust_keys: list[str] | None,
    jobs: int,
) -> Verified:  # fmt: skip
    """Check a bundle folder (`what`) or a store. Trusted keys
    (--trust, else the configured ones) are read only for a store: a folder needs none."""
    if what is not None and store:
        raise UsageError(
            f"give a bundle folder or --store, not both ({what!r} and --store {store!r})",
            hint="`factory verify FOLDER` checks one bundle; `factory verify --store URL` checks a store",
        )
    if what is not None and "://" not in what:
        return Verified(folder=Path(what), files=verify_folder(Path(what), given=what))
    from factory.store.housekeeping import verify_store

    # A store URL in place of the folder is still accepted: the older spelling of --store.
    target = choose_store(what or store, endpoint_url, matrix)
    bundles, blobs = verify_store(target, load_trust(trust_keys), jobs=jobs)
    return Verified(store_url=target.url, bundles=bundles, blobs=blobs)
