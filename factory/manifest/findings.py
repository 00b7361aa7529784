"""One problem a manifest rule found: where (a path into the YAML), what, and the fix."""

from __future__ import annotations

from dataclasses import dataclass

from factory.manifest.yamlfile import PathKey


@dataclass(frozen=True)
class Finding:
    path: PathKey
    message: str
    fix: str
