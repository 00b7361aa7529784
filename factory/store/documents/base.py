"""What every store document shares: schema names, the checks on names, digests and
paths taken from documents, the frozen base model, and parsing with clear errors.

Every module that reads or writes a document goes through this package: `parse` turns
bytes into a document or raises a DocumentError that names the file, the field and the
fix; `body` gives the canonical bytes (sorted keys, two-space indent, one trailing
newline), which is what is hashed and stored. Keys into the store that a document
carries (an index record's `manifest`) must be the key the layout gives that bundle or
release, so a tampered document cannot make any backend read outside its layout.

Fields are only those written (`exclude_unset`), so a document read and written again
gives back its own bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from factory.errors import IntegrityError, Problem, render_problems

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
        return render_problems(self.problems)


def check_segment(value: str) -> str:
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


Segment = Annotated[str, AfterValidator(check_segment)]
Digest = Annotated[str, AfterValidator(_digest)]
BundleName = Annotated[str, AfterValidator(_bundle_name)]
BundlePath = Annotated[str, AfterValidator(_bundle_path)]


def bundle_doc_key(name: str, version: str) -> str:
    """bundles/MODEL/QUANT/TARGET/VERSION.json for a bundle named MODEL/QUANT/TARGET."""
    return f"bundles/{name}/{version}.json"


def release_doc_key(name: str, version: str) -> str:
    return f"releases/{name}/{version}.json"


class Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_data(self) -> dict[str, Any]:
        """Plain JSON data: only the fields that were given, by their JSON names."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return data

    def body(self) -> bytes:
        """The canonical bytes: what is stored, hashed and compared."""
        return (json.dumps(self.to_data(), indent=2, sort_keys=True) + "\n").encode()


class TopDocument(Document):
    """A document stored on its own: it names its schema, and `parse` reads it."""

    schema_name: ClassVar[str]
    label: ClassVar[str]


D = TypeVar("D", bound="TopDocument")

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
