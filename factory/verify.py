"""`factory verify`: every byte of one bundle folder against its manifest, or every
blob of a store against the manifests that reference it."""

from __future__ import annotations

from pathlib import Path

from .documents import BUNDLE_MANIFEST, BundleManifest, read_file
from .errors import UsageError
from .integrity import check_bundle_dir
from .store_choice import choose_store
from .trust import load_trust


def verify_folder(path: Path) -> int:
    """The number of files checked; raises on the first file that does not match."""
    if not path.is_dir():
        raise UsageError(
            f"{path}: no such bundle folder",
            hint="give a folder `factory pull` or `factory build` made, or check a store with --store URL",
        )
    if not (path / BUNDLE_MANIFEST).is_file():
        raise UsageError(
            f"{path} is not a bundle folder (no {BUNDLE_MANIFEST})",
            hint="give a folder `factory pull` or `factory build` made; check a store with --store URL",
        )
    manifest = read_file(BundleManifest, path / BUNDLE_MANIFEST, fix=f"pull or rebuild {path}; do not edit it")
    check_bundle_dir(path, manifest)
    return len(manifest.files)


def verify(
    what: str | None, *, store: str | None, endpoint_url: str | None, matrix: Path | None, trust_keys: list[str] | None,
    jobs: int,
) -> str:  # fmt: skip
    """Check a bundle folder (`what`) or a store, and say what was checked. Trusted keys
    (--trust, else the configured ones) are read only for a store: a folder needs none."""
    if what is not None and store:
        raise UsageError(
            f"give a bundle folder or --store, not both ({what!r} and --store {store!r})",
            hint="`factory verify FOLDER` checks one bundle; `factory verify --store URL` checks a store",
        )
    if what is not None and "://" not in what:
        files = verify_folder(Path(what))
        return f"{what}: {files} files match their manifest"
    from .housekeeping import verify_store

    # A store URL in place of the folder is still accepted: the older spelling of --store.
    target = choose_store(what or store, endpoint_url, matrix)
    bundles, blobs = verify_store(target, load_trust(trust_keys), jobs=jobs)
    return f"{target.url}: {bundles} bundle version(s), {blobs} blob(s) verified"
