"""The matrix manifest: its schema, its loader and its cross-checks."""

from .load import LoadedManifest, load_manifest
from .model import Manifest

__all__ = ["LoadedManifest", "Manifest", "load_manifest"]
