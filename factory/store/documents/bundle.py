"""factory-bundle.json: one bundle's files, compatibility, provenance and gates."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import ConfigDict, Field, NonNegativeInt, model_validator

from factory.store.documents.base import BUNDLE_SCHEMA, BundleName, BundlePath, Digest, Document, Segment, TopDocument


class Compatibility(Document):
    """What a client matches against its runtime: the flow generation (`ls`) and the device
    (`pull --target auto`) are required; builds record more (params index, library, pins)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    flow: str
    device: str
    params_index: str | None = None
    library: str | None = None


class BundleFile(Document):
    path: BundlePath
    role: str
    size: NonNegativeInt
    sha256: Digest


class BundleManifest(TopDocument):
    """factory-bundle.json: one bundle's files, where it came from and what it runs on."""

    schema_name: ClassVar[str] = BUNDLE_SCHEMA
    label: ClassVar[str] = "bundle manifest"
    schema_version: Literal["factory.bundle/v1"] = Field(alias="schema")
    name: BundleName
    model: Segment
    quant: Segment
    target: Segment
    files: tuple[BundleFile, ...]
    compatibility: Compatibility
    provenance: dict[str, Any]
    gates: dict[str, Any]
    run: str

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.name != f"{self.model}/{self.quant}/{self.target}":
            raise ValueError(f"name {self.name!r} is not model/quant/target ({self.model}/{self.quant}/{self.target})")
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("files lists a path twice")
        return self

    @property
    def version(self) -> str | None:
        release = self.provenance.get("release")
        version = release.get("version") if isinstance(release, dict) else None
        return str(version) if version else None

    @property
    def build_key(self) -> str:
        return str(self.provenance.get("build_key", ""))

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def blobs(self) -> dict[str, int]:
        """Each distinct blob once, with its size."""
        return {f.sha256: f.size for f in self.files}
