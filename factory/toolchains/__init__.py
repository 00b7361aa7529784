"""One module per MLC flow generation; `FLOWS` maps the manifest's `flow` to it."""

from __future__ import annotations

from collections.abc import Mapping

from .base import Flow, Unsupported
from .current import CurrentFlow
from .legacy import LegacyFlow

FLOWS: Mapping[str, Flow] = {"legacy": LegacyFlow(), "current": CurrentFlow()}

__all__ = ["FLOWS", "Flow", "Unsupported"]
