"""Where bundles are published: a local folder (the embedded default) or S3-compatible storage."""

from .base import Store, open_store

__all__ = ["Store", "open_store"]
