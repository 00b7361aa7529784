"""Build keys: sha256 of a canonical encoding of everything that shapes a node's output."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

# Bump when the factory changes how it builds, so old cached outputs stop matching.
RECIPE_VERSION = "1"


def canonical(value: Any) -> bytes:
    """JSON with sorted keys and no whitespace: equal data gives equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def build_key(kind: str, inputs: Any, dep_keys: Iterable[str]) -> str:
    payload = {"recipe": RECIPE_VERSION, "kind": kind, "inputs": inputs, "deps": sorted(dep_keys)}
    return hashlib.sha256(canonical(payload)).hexdigest()
