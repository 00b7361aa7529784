"""releases/NAME/VERSION.json: the bundles of one release with their headline figures."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, NonNegativeInt, model_validator

from factory.store.documents.base import (
    RELEASE_SCHEMA,
    BundleName,
    Digest,
    Document,
    Segment,
    TopDocument,
    check_segment,
)
from factory.store.documents.bundle import Compatibility


class SmokeFigures(Document):
    status: str | None = None
    prefill_tok_s: float | None = None
    decode_tok_s: float | None = None


class ParitySummary(Document):
    """The parity gate's headline figures (factory/parity.py), where it ran."""

    status: str | None = None
    kl_mean: float | None = None
    kl_max: float | None = None
    top1: float | None = None


class ReleaseBundle(Document):
    name: BundleName
    manifest: str
    sha256: Digest
    size: NonNegativeInt
    files: NonNegativeInt
    compatibility: Compatibility
    smoke: SmokeFigures
    gates: dict[str, str] = Field(default_factory=dict, description="each gate's status: passed, failed, not-run")
    parity: ParitySummary = ParitySummary()

    @model_validator(mode="after")
    def _key_follows_the_layout(self) -> Self:
        if not self.manifest.startswith(f"bundles/{self.name}/") or not self.manifest.endswith(".json"):
            raise ValueError(f"manifest {self.manifest!r} is not a bundle manifest key of {self.name}")
        check_segment(self.manifest[len(f"bundles/{self.name}/") : -len(".json")])
        return self


class ReleaseManifest(TopDocument):
    """releases/NAME/VERSION.json: every bundle of one release."""

    schema_name: ClassVar[str] = RELEASE_SCHEMA
    label: ClassVar[str] = "release manifest"
    schema_version: Literal["factory.release/v1"] = Field(alias="schema")
    name: Segment
    version: Segment
    factory_version: str
    created_at: str
    bundles: tuple[ReleaseBundle, ...]
