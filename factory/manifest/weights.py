"""Which files of a model folder a conversion reads, and the content hash of a local one.

One list serves both sources: the hub fetch downloads these patterns, and a local
folder is hashed and copied by them, so a README or a second weight format lying in
the folder never changes a build key.
"""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatchcase
from pathlib import Path

from factory.manifest.model import WeightFormat

CONFIG_FILES = ("config.json", "generation_config.json")
WEIGHT_PATTERNS: dict[WeightFormat, tuple[str, ...]] = {
    "safetensors": ("*.safetensors", "*.safetensors.index.json"),
    "pytorch": ("pytorch_model*.bin", "pytorch_model.bin.index.json"),
}
_CHUNK = 1 << 20


def choose_files(repo_files: list[str], weight_format: WeightFormat) -> list[str] | None:
    """PURE: the patterns to fetch for `weight_format`, or None if there are no such weights."""
    weights = WEIGHT_PATTERNS[weight_format][0]
    if not any(fnmatchcase(f, weights) for f in repo_files):
        return None
    return [*CONFIG_FILES, *WEIGHT_PATTERNS[weight_format]]


def other_format(weight_format: WeightFormat) -> WeightFormat:
    return "pytorch" if weight_format == "safetensors" else "safetensors"


def local_files(folder: Path, weight_format: WeightFormat) -> list[str] | None:
    """The files of `folder` (top level, sorted) a conversion of `weight_format` reads;
    None when the folder holds no weights of that format."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    patterns = choose_files(names, weight_format)
    if patterns is None:
        return None
    return [n for n in names if any(fnmatchcase(n, p) for p in patterns)]


def content_digest(folder: Path, names: list[str]) -> str:
    """sha256 over every named file's name and content: the local model's identity.
    Streams each file, so multi-GB weights never sit in memory."""
    entries = []
    for name in names:
        digest = hashlib.sha256()
        with (folder / name).open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        entries.append({"name": name, "sha256": digest.hexdigest()})
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
