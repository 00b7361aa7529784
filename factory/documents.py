"""The store's contract: bundle manifests, the index and release manifests, as frozen,
typed documents.

Every module that reads or writes one of these goes through this file: `parse` turns
bytes into a document or raises a DocumentError that names the file, the field and the
fix; `body` gives the canonical bytes (sorted keys, two-space indent, one trailing
newline), which is what is hashed and stored. Keys into the store that a document
carries (an index record's `manifest`) must be the key the layout gives that bundle or
release, so a tampered document cannot make any backend read outside its layout.

Fields are only those written (`exclude_unset`), so a document read and written again
gives back its own bytes.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, model_validator

from .errors import Problem
from .integrity import IntegrityError

BUNDLE_SCHEMA = "factory.bundle/v1"
INDEX_SCHEMA = "factory.index/v1"
RELEASE_SCHEMA = "factory.release/v1"
SIGNED_SCHEMA = "factory.signed/v1"
INDEX_PAYLOAD = "application/vnd.factory.index+json"
RELEASE_PAYLOAD = "application/vnd.factory.release+json"
BUNDLE_MANIFEST = "factory-bundle.json"
INDEX = "index.json"

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class DocumentError(IntegrityError):
    """A bundle manifest, index or release manifest that breaks the store's contract:
    not JSON, an unknown schema, a missing or malformed field, a key outside the layout.
    Exit code 4 (the integrity family): nothing is read through it or written from it."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(problems[0].message, hint=problems[0].fix)

    def render(self) -> str:
        fixes = {p.fix for p in self.problems}
        if len(self.problems) == 1 or len(fixes) > 1:
            head = "error: " if len(self.problems) == 1 else f"error: {len(self.problems)} problems\n"
            return head + "\n".join(p.render() for p in self.problems)
        # One fix for all: say it once, after the list.
        lines = [p.render().split("\n  fix: ")[0] for p in self.problems]
        return f"error: {len(self.problems)} problems\n" + "\n".join(lines) + f"\n  fix: {fixes.pop()}"


def _segment(value: str) -> str:
    if not _SEGMENT.match(value):
        raise ValueError(f"{value!r} is not a plain name (letters, digits, . _ + -, not starting with a dot)")
    return value


def _digest(value: str) -> str:
    if not _DIGEST.match(value):
        raise ValueError(f"{value!r} is not a sha256 hex digest (64 lowercase hex digits)")
    return value


def _bundle_name(value: str) -> str:
    parts = value.split("/")
    if len(parts) != 3 or not all(_SEGMENT.match(p) for p in parts):
        raise ValueError(f"{value!r} is not a bundle name MODEL/QUANT/TARGET of plain names")
    return value


def _bundle_path(value: str) -> str:
    """A file path inside a bundle folder: relative, normalised, never leaving the folder."""
    pure = PurePosixPath(value)
    if (
        not value
        or "\\" in value
        or "\x00" in value
        or pure.is_absolute()
        or any(part in {"..", "."} for part in pure.parts)
        or value != pure.as_posix()
        or pure.name == BUNDLE_MANIFEST
    ):
        raise ValueError(f"unsafe file path {value!r}: bundle paths are plain relative paths inside the bundle")
    return value


Segment = Annotated[str, AfterValidator(_segment)]
Digest = Annotated[str, AfterValidator(_digest)]
BundleName = Annotated[str, AfterValidator(_bundle_name)]
BundlePath = Annotated[str, AfterValidator(_bundle_path)]


def bundle_doc_key(name: str, version: str) -> str:
    """bundles/MODEL/QUANT/TARGET/VERSION.json for a bundle named MODEL/QUANT/TARGET."""
    return f"bundles/{name}/{version}.json"


def release_doc_key(name: str, version: str) -> str:
    return f"releases/{name}/{version}.json"


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_data(self) -> dict[str, Any]:
        """Plain JSON data: only the fields that were given, by their JSON names."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return data

    def body(self) -> bytes:
        """The canonical bytes: what is stored, hashed and compared."""
        return (json.dumps(self.to_data(), indent=2, sort_keys=True) + "\n").encode()


class Compatibility(_Document):
    """What a client matches against its runtime: the flow generation (`ls`) and the device
    (`pull --target auto`) are required; builds record more (params index, library, pins)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    flow: str
    device: str
    params_index: str | None = None
    library: str | None = None


class BundleFile(_Document):
    path: BundlePath
    role: str
    size: NonNegativeInt
    sha256: Digest


class BundleManifest(_Document):
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


class IndexRecord(_Document):
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


class BundleEntry(_Document):
    versions: dict[Segment, IndexRecord]
    latest: Segment | None = None

    @model_validator(mode="after")
    def _latest_is_listed(self) -> Self:
        _check_latest(self.latest, self.versions)
        return self


class ReleaseRef(_Document):
    manifest: str
    sha256: Digest


class ReleaseEntry(_Document):
    versions: dict[Segment, ReleaseRef]
    latest: Segment | None = None

    @model_validator(mode="after")
    def _latest_is_listed(self) -> Self:
        _check_latest(self.latest, self.versions)
        return self


class Index(_Document):
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


class SmokeFigures(_Document):
    status: str | None = None
    prefill_tok_s: float | None = None
    decode_tok_s: float | None = None


class ParitySummary(_Document):
    """The parity gate's headline figures (factory/parity.py), where it ran."""

    status: str | None = None
    kl_mean: float | None = None
    kl_max: float | None = None
    top1: float | None = None


class ReleaseBundle(_Document):
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
        _segment(self.manifest[len(f"bundles/{self.name}/") : -len(".json")])
        return self


class ReleaseManifest(_Document):
    """releases/NAME/VERSION.json: every bundle of one release."""

    schema_name: ClassVar[str] = RELEASE_SCHEMA
    label: ClassVar[str] = "release manifest"
    schema_version: Literal["factory.release/v1"] = Field(alias="schema")
    name: Segment
    version: Segment
    factory_version: str
    created_at: str
    bundles: tuple[ReleaseBundle, ...]


class Signature(_Document):
    keyid: str = Field(description="the first 16 hex digits of the sha256 of the raw ed25519 public key")
    sig: str = Field(description="base64 ed25519 signature of the envelope's pre-authentication encoding")


class SignedEnvelope(_Document):
    """A signed document (index.json when a signing key is configured, and
    releases/NAME/VERSION.signed.json): DSSE's shape, so the signed bytes are exactly
    the payload and no JSON canonicalisation is trusted."""

    schema_name: ClassVar[str] = SIGNED_SCHEMA
    label: ClassVar[str] = "signed envelope"
    schema_version: Literal["factory.signed/v1"] = Field(alias="schema")
    payload_type: Literal["application/vnd.factory.index+json", "application/vnd.factory.release+json"] = Field(
        alias="payloadType"
    )
    payload: str = Field(description="base64 of the signed document's bytes")
    signatures: tuple[Signature, ...]

    def payload_bytes(self) -> bytes:
        return base64.b64decode(self.payload, validate=True)

    @model_validator(mode="after")
    def _payload_is_base64(self) -> Self:
        try:
            self.payload_bytes()
        except ValueError:
            raise ValueError("payload is not base64") from None
        return self


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a signature covers (type and bytes, with lengths)."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def is_envelope(data: bytes) -> bool:
    """Whether stored bytes look like a signed envelope (the schema decides; parse checks the rest)."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(raw, dict) and raw.get("schema") == SIGNED_SCHEMA


D = TypeVar("D", BundleManifest, Index, ReleaseManifest, SignedEnvelope)

_FIXES: dict[str, str] = {
    BUNDLE_SCHEMA: "rebuild the bundle with `factory build`, or pull it again; do not edit bundle manifests",
    INDEX_SCHEMA: "the index is rebuilt by publishing again: keep a copy of index.json, remove it from the "
    "store, then rerun `factory publish` for each bundle (or `factory release`); yanks must be redone",
    SIGNED_SCHEMA: "the signed document is damaged: publish again with the signing key (FACTORY_SIGNING_KEY)",
    RELEASE_SCHEMA: "rerun `factory release` for that version after removing the damaged release manifest",
}


STORED_BUNDLE_FIX = (
    "the store's copy of this bundle manifest is damaged: delete it from the store and publish the bundle "
    "again (`factory publish DIR`)"
)


def parse(kind: type[D], data: bytes, *, where: str, fix: str | None = None) -> D:
    """A document of `kind` from `data`, or a DocumentError naming `where`, each field and the fix."""
    fix = fix or _FIXES[kind.schema_name]
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DocumentError([Problem(file=where, field="", message=f"not valid JSON ({exc})", fix=fix)]) from None
    if not isinstance(raw, dict):
        raise DocumentError([Problem(file=where, field="", message="not a JSON object", fix=fix)])
    schema = raw.get("schema")
    if schema != kind.schema_name:
        if isinstance(schema, str) and schema.split("/")[0] == kind.schema_name.split("/")[0]:
            message = f"schema {schema!r} is not one this factory reads ({kind.schema_name})"
            newer = "upgrade the factory to the version that wrote it (`factory --version` shows this one)"
            raise DocumentError([Problem(file=where, field="schema", message=message, fix=newer)])
        found = "missing" if schema is None else f"{schema!r}"
        message = f"{found}, expected {kind.schema_name!r}: this is not a {kind.label}"
        raise DocumentError([Problem(file=where, field="schema", message=message, fix=fix)])
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        problems = [
            Problem(file=where, field=_field(error["loc"]), message=_message(error), fix=fix) for error in exc.errors()
        ]
        raise DocumentError(problems) from None


def read_file(kind: type[D], path: Path, *, fix: str | None = None) -> D:
    """A document from a local file (e.g. a bundle folder's factory-bundle.json)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DocumentError(
            [Problem(file=str(path), field="", message="not found", fix=fix or _FIXES[kind.schema_name])]
        ) from None
    except OSError as exc:
        raise DocumentError(
            [Problem(file=str(path), field="", message=f"cannot read it: {exc}", fix=fix or _FIXES[kind.schema_name])]
        ) from None
    return parse(kind, data, where=str(path), fix=fix)


def _field(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if part == "[key]":
            text += " (the key)"
        elif isinstance(part, int):
            text += f"[{part}]"
        elif "/" in part or "." in part or not part.isidentifier():
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


def _message(error: Mapping[str, Any]) -> str:
    kind = error.get("type")
    if kind == "missing":
        return "missing (required)"
    if kind == "extra_forbidden":
        return "not a field of this document"
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")
