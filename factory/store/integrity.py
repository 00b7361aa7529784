"""Checks that every byte is what a manifest says."""

from __future__ import annotations

from pathlib import Path

from factory.errors import IntegrityError
from factory.store.bundle_folder import sha256_file
from factory.store.documents import BUNDLE_MANIFEST, BundleManifest


def check_bundle_dir(bundle: Path, manifest: BundleManifest, *, hashes: bool = True) -> None:
    """Every listed file exists with its size and sha256; nothing unlisted is there.
    (The manifest's paths were checked to stay inside the bundle when it was parsed.)
    Without `hashes` only names and sizes are checked: publish hashes each file while it
    reads it for the upload instead, one pass over the bytes rather than two."""
    problems = []
    listed = set()
    for entry in manifest.files:
        listed.add(entry.path)
        path = bundle / entry.path
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != entry.size:
            problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {entry.size}")
        elif hashes and sha256_file(path) != entry.sha256:
            problems.append(f"{path}: sha256 differs from the manifest")
    extra = sorted(
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.name != BUNDLE_MANIFEST and p.relative_to(bundle).as_posix() not in listed
    )
    problems += [f"{bundle / p}: not listed in the manifest" for p in extra]
    if problems:
        raise bundle_mismatch(problems)


def bundle_mismatch(problems: list[str]) -> IntegrityError:
    return IntegrityError(
        "bundle does not match its manifest:\n    " + "\n    ".join(problems),
        hint="rebuild or pull the bundle again; do not edit bundles by hand",
    )


def hash_mismatch(path: Path) -> IntegrityError:
    """A file whose bytes do not hash to the sha256 its manifest lists."""
    return bundle_mismatch([f"{path}: sha256 differs from the manifest"])
