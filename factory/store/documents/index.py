"""index.json: every published bundle version and release, keyed as the store lays them out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, NonNegativeInt, model_validator

from factory.store.documents.base import (
    INDEX_SCHEMA,
    BundleName,
    Digest,
    Document,
    Segment,
    TopDocument,
    bundle_doc_key,
    release_doc_key,
)
from factory.store.documents.bundle import Compatibility


class IndexRecord(Document):
    """What the index says about one published bundle version."""

    manifest: str
    sha256: Digest
    build_key: str
    compatibility: Compatibility
    size: NonNegativeInt
    published_at: str
    yanked: bool = False
    yank_reason: str | None = None
    yanked_at: str | None = None


def _check_latest(latest: str | None, versions: Mapping[str, object]) -> None:
    """An index entry's `latest` must name one of its own versions."""
    if latest is not None and latest not in versions:
        raise ValueError(f"latest {latest!r} is not one of its versions")


class BundleEntry(Document):
    versions: dict[Segment, IndexRecord]
    latest: Segment | None = None

    @model_validator(mode="after")
    def _latest_is_listed(self) -> Self:
        _check_latest(self.latest, self.versions)
        return self


class ReleaseRef(Document):
    manifest: str
    sha256: Digest


class ReleaseEntry(Document):
    versions: dict[Segment, ReleaseRef]
    latest: Segment | None = None

    @model_validator(mode="after")
    def _latest_is_listed(self) -> Self:
        _check_latest(self.latest, self.versions)
        return self


class Index(TopDocument):
    """index.json: what is current, per bundle and version, and the releases."""

    schema_name: ClassVar[str] = INDEX_SCHEMA
    label: ClassVar[str] = "store index"
    schema_version: Literal["factory.index/v1"] = Field(alias="schema")
    bundles: dict[BundleName, BundleEntry]
    releases: dict[Segment, ReleaseEntry] = Field(default_factory=dict)
    version: NonNegativeInt | None = Field(
        default=None, description="signed indexes: grows by one with every write (rollback check)"
    )
    expires: str | None = Field(default=None, description="signed indexes: UTC time after which clients refuse it")

    @model_validator(mode="after")
    def _keys_follow_the_layout(self) -> Self:
        # The one place keys read from the index are checked: each must be the key the
        # layout gives that name and version, whatever the backend.
        for name, entry in self.bundles.items():
            for version, record in entry.versions.items():
                expected = bundle_doc_key(name, version)
                if record.manifest != expected:
                    raise ValueError(
                        f"bundles[{name!r}].versions[{version!r}].manifest is {record.manifest!r}; "
                        f"the store layout puts it at {expected!r}"
                    )
        for name, release in self.releases.items():
            for version, ref in release.versions.items():
                expected = release_doc_key(name, version)
                if ref.manifest != expected:
                    raise ValueError(
                        f"releases[{name!r}].versions[{version!r}].manifest is {ref.manifest!r}; "
                        f"the store layout puts it at {expected!r}"
                    )
        return self

    @classmethod
    def empty(cls) -> Index:
        return cls.model_validate({"schema": INDEX_SCHEMA, "bundles": {}, "releases": {}})

    def with_bundles(self, records: Mapping[str, tuple[str, IndexRecord]]) -> Index:
        """Add or replace bundle versions; the same manifest again keeps the first record
        (its publish time and any yank)."""
        data = self.to_data()
        for name, (version, record) in records.items():
            entry = data["bundles"].setdefault(name, {"versions": {}})
            previous = entry["versions"].get(version)
            if previous is None or previous["sha256"] != record.sha256:
                entry["versions"][version] = record.to_data()
            entry["latest"] = _latest(entry["versions"])
        return Index.model_validate(data)

    def with_yank(self, name: str, version: str, reason: str, at: str) -> Index:
        data = self.to_data()
        entry = data["bundles"][name]
        entry["versions"][version].update(yanked=True, yank_reason=reason, yanked_at=at)
        entry["latest"] = _latest(entry["versions"])
        return Index.model_validate(data)

    def with_release(self, name: str, version: str, ref: ReleaseRef) -> Index:
        data = self.to_data()
        entry = data.setdefault("releases", {}).setdefault(name, {"versions": {}})
        entry["versions"][version] = ref.to_data()
        entry["latest"] = version
        return Index.model_validate(data)

    def with_records_of(self, other: Index, versions: set[tuple[str, str]], releases: set[tuple[str, str]]) -> Index:
        """This index plus `other`'s records for the given bundle and release versions,
        copied verbatim (publish time, yank state); versions this index already has are kept."""
        data = self.to_data()
        for name, version in sorted(versions):
            entry = data["bundles"].setdefault(name, {"versions": {}})
            entry["versions"].setdefault(version, other.bundles[name].versions[version].to_data())
            entry["latest"] = _latest(entry["versions"])
        for name, version in sorted(releases):
            entry = data.setdefault("releases", {}).setdefault(name, {"versions": {}})
            entry["versions"].setdefault(version, other.releases[name].versions[version].to_data())
            newest = other.releases[name].latest
            entry["latest"] = newest if newest in entry["versions"] else version
        return Index.model_validate(data)

    def lists(self) -> set[tuple[str, str, str]]:
        """(name, version, manifest sha256) of every bundle version listed."""
        return {(n, v, r.sha256) for n, e in self.bundles.items() for v, r in e.versions.items()}

    def with_signing_terms(self, version: int, expires: str) -> Index:
        """The same index with the version and expiry a signature covers."""
        return Index.model_validate({**self.to_data(), "version": version, "expires": expires})

    def build_keys(self) -> set[str]:
        return {r.build_key for entry in self.bundles.values() for r in entry.versions.values()}


def _latest(versions: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The newest version that is not yanked (versions are ordered by publish time)."""
    live = [(v["published_at"], name) for name, v in versions.items() if not v.get("yanked")]
    return max(live)[1] if live else None
