"""Toolchains: one module per MLC flow generation (`FLOWS` maps the manifest's `flow` to
it), the recorded upstream contract of each pinned commit, and the toolchain images
(`images/`, a layer of its own above the manifest).

The flows and contracts speak the manifest's vocabulary (`factory.manifest.model`) and
nothing else of the factory: the manifest's loader asks them what each toolchain can build.
"""

from __future__ import annotations

from collections.abc import Mapping

from factory.toolchains.base import Flow, Unsupported
from factory.toolchains.current import CurrentFlow
from factory.toolchains.legacy import LegacyFlow

FLOWS: Mapping[str, Flow] = {"legacy": LegacyFlow(), "current": CurrentFlow()}

__all__ = ["FLOWS", "Flow", "Unsupported"]
