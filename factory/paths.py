"""Where the factory keeps things on this machine, in one place."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """$XDG_CACHE_HOME/factory, else ~/.cache/factory."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "factory"


def blob_cache() -> Path:
    """Pulled blobs: FACTORY_CACHE, else the cache home."""
    return Path(os.environ["FACTORY_CACHE"]) if os.environ.get("FACTORY_CACHE") else cache_home()


def prefix_root() -> Path:
    """macOS metal-runner toolchain prefixes: FACTORY_PREFIX_ROOT, else <cache home>/toolchains."""
    if os.environ.get("FACTORY_PREFIX_ROOT"):
        return Path(os.environ["FACTORY_PREFIX_ROOT"])
    return cache_home() / "toolchains"
