"""Checks that every byte is what a manifest says, and that its paths stay inside the bundle."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from .bundle import BUNDLE_MANIFEST, sha256_file
from .errors import FactoryError


class IntegrityError(FactoryError):
    """Bytes that do not match their manifest, or a manifest that points outside its bundle. Exit code 4."""

    exit_code = 4


def safe_relative(path: str, *, where: str) -> PurePosixPath:
    """A manifest path as a relative path that cannot leave the bundle folder."""
    pure = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or "\x00" in path
        or pure.is_absolute()
        or any(part in {"..", "."} for part in pure.parts)
        or path != pure.as_posix()
        or pure.name == BUNDLE_MANIFEST
    ):
        raise IntegrityError(
            f"{where}: unsafe file path {path!r} in the bundle manifest",
            hint="bundle paths must be plain relative paths inside the bundle; this manifest was not made by "
            "the factory or was tampered with",
        )
    return pure


def check_bundle_dir(bundle: Path, manifest: dict[str, Any]) -> None:
    """Every listed file exists with its size and sha256; nothing unlisted is there."""
    problems = []
    listed = set()
    for entry in manifest["files"]:
        relative = safe_relative(entry["path"], where=str(bundle / BUNDLE_MANIFEST))
        listed.add(relative.as_posix())
        path = bundle / relative
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != int(entry["size"]):
            problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {entry['size']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest")
    extra = sorted(
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.name != BUNDLE_MANIFEST and p.relative_to(bundle).as_posix() not in listed
    )
    problems += [f"{bundle / p}: not listed in the manifest" for p in extra]
    if problems:
        raise IntegrityError(
            "bundle does not match its manifest:\n    " + "\n    ".join(problems),
            hint="rebuild or pull the bundle again; do not edit bundles by hand",
        )
