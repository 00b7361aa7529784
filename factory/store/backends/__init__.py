"""Where bundles are published: a local folder (the embedded default) or S3-compatible storage.

The backends import `base`; only this package's entry point knows them all, so no
module of the package imports another in a circle."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from factory.errors import UsageError
from factory.store.backends.base import Store

__all__ = ["Store", "open_store"]


def open_store(url: str, *, endpoint_url: str | None = None, base: Path | None = None) -> Store:
    """A store for `url`: file://PATH or a plain path (relative to `base` or the
    working folder), or s3://BUCKET/PREFIX (endpoint from --endpoint-url or AWS_ENDPOINT_URL)."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        from factory.store.backends.s3 import S3Store

        return S3Store(parsed.netloc, parsed.path.strip("/"), endpoint_url=endpoint_url)
    if parsed.scheme in ("", "file"):
        from factory.store.backends.local import LocalStore

        raw = url[len("file://") :] if parsed.scheme == "file" else url
        path = Path(os.path.expanduser(raw))
        if not path.is_absolute() and base is not None:
            path = base / path
        return LocalStore(path)
    raise UsageError(f"unsupported store URL {url!r}", hint="use file://PATH, a plain path, or s3://BUCKET/PREFIX")
