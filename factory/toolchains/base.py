"""What every flow generation must tell the factory about its pinned mlc-llm.

A flow module holds facts read from upstream source at one commit: which
quantization names its CLI accepts, which model types it can build, how it
spells an explicit target, and what files it writes. Planning asks these
questions; later steps (argv rendering, layout lint) ask more of the same module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..manifest.model import Model, ModelType, Target


@dataclass(frozen=True, kw_only=True)
class Unsupported:
    """Why a flow cannot do something, and what the user can change."""

    message: str
    fix: str


class Flow(Protocol):
    name: str
    read_at: str
    """The upstream mlc-llm commit the facts in this module were read at."""
    params_index: str
    cli_quantizations: frozenset[str]

    def model_quantizations(self, model_type: ModelType) -> frozenset[str] | None:
        """Quantizations the flow can apply to this model type; None if it cannot build it."""

    def check_model(self, model: Model) -> Unsupported | None:
        """Flow-specific rules a model entry must satisfy beyond its type."""

    def target_argument(self, target: Target) -> str | Unsupported:
        """The exact target/device argument this flow's CLI gets for `target`."""

    def library_name(self, model: str, quant: str, target_name: str, target: Target) -> str | Unsupported:
        """The file name of the compiled model library this flow writes."""
