"""Reading a manifest file: YAML with lines, then schema, then cross-checks.

Every problem is reported with the file, the line and the field, and nothing
else runs until the manifest is clean.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from factory.errors import InputError, Problem
from factory.manifest.checks import check_manifest
from factory.manifest.model import Manifest
from factory.manifest.weights import content_digest, local_files
from factory.manifest.yamlfile import Located, PathKey, dotted, load_yaml


@dataclass(frozen=True)
class LoadedManifest:
    """A valid manifest, where it came from, and digests of the files it names."""

    manifest: Manifest
    path: Path
    root: Path
    file_digests: Mapping[str, str] = field(default_factory=dict)
    local_models: Mapping[str, LocalModel] = field(default_factory=dict)
    """Models with a local folder, by name: where it is and what it holds."""


@dataclass(frozen=True)
class LocalModel:
    folder: Path
    files: tuple[str, ...]
    """The files a conversion reads (config and weights), sorted."""
    digest: str
    """sha256 over their names and contents: the model's identity in build keys."""


def load_manifest(path: Path) -> LoadedManifest:
    return validate_manifest(load_yaml(path), path)


def validate_manifest(located: Located, path: Path) -> LoadedManifest:
    """Schema and cross-checks for a parsed document; `path` names it in errors
    and anchors `root`."""
    if not isinstance(located.data, dict):
        raise InputError(
            [
                Problem(
                    file=str(path),
                    field="",
                    line=located.line_of(()),
                    message="the manifest must be a mapping at the top level",
                    fix="start from manifests/world.yaml",
                )
            ]
        )
    try:
        manifest = Manifest.model_validate(located.data)
    except ValidationError as exc:
        raise InputError(_schema_problems(exc, located, str(path))) from None
    root = path.parent / manifest.root
    findings = check_manifest(manifest, root)
    if findings:
        raise InputError(
            [
                Problem(
                    file=str(path), field=dotted(f.path), line=located.line_of(f.path), message=f.message, fix=f.fix
                )
                for f in findings
            ]
        )
    named = [patch.path for toolchain in manifest.toolchains.values() for patch in toolchain.patches]
    named += [model.tokenizer.path for model in manifest.models if model.tokenizer.path is not None]
    digests = {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in named}
    return LoadedManifest(
        manifest=manifest, path=path, root=root, file_digests=digests, local_models=_local_models(manifest, root)
    )


def _local_models(manifest: Manifest, root: Path) -> dict[str, LocalModel]:
    """Hash every local model folder (the checks made sure each holds config and weights).
    This reads every weight byte once per load: seconds per GB, the price of a key that
    follows the content rather than a timestamp."""
    found = {}
    for model in manifest.models:
        if model.local is None:
            continue
        folder = (root / model.local.path).resolve()
        files = local_files(folder, model.local.format)
        assert files is not None
        found[model.name] = LocalModel(folder=folder, files=tuple(files), digest=content_digest(folder, files))
    return found


def _schema_problems(exc: ValidationError, located: Located, filename: str) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = _data_path(error["loc"], located.data, error["type"] == "missing")
        problems.append(
            Problem(
                file=filename,
                field=dotted(loc),
                line=located.line_of(loc),
                message=_message(error),
                fix=_fix(error, loc),
            )
        )
    return problems


def _data_path(loc: tuple[Any, ...], data: Any, missing: bool) -> PathKey:
    """Pydantic locations also name union branches ('str', 'dict[...]'); keep
    only the parts that walk the document, plus the name of a missing key."""
    out: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        walks = (isinstance(node, dict) and isinstance(part, str) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if walks:
            node = node[part]
            out.append(part)
        elif missing and index == len(loc) - 1 and isinstance(part, str):
            out.append(part)
    return tuple(out)


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    value = error.get("input")
    shown = f" (got {value!r})" if isinstance(value, (str, int, float, bool)) else ""
    return f"{error['msg']}{shown}"


def _fix(error: Any, loc: PathKey) -> str:
    kind = error["type"]
    name = str(loc[-1]) if loc else "this key"
    if kind == "extra_forbidden":
        return f"remove {name!r} or correct its spelling (`factory schema` lists every allowed key)"
    if kind == "missing":
        return f"add {name!r} (`factory schema` describes it)"
    if kind == "string_type":
        return "quote the value so YAML reads it as text, e.g. '12.8' or 'abc123...'"
    if kind == "literal_error":
        return f"use one of the values the message lists for {name!r}"
    if kind == "string_pattern_mismatch":
        return f"write {name!r} in the form the pattern asks for (`factory schema` describes it)"
    return f"correct {name!r} (`factory schema` describes it)"
