"""Read YAML into plain data while remembering where every value came from.

PyYAML's own loaders forget positions and silently keep the last of two equal
keys. We compose the node graph instead, turn it into plain data ourselves,
reject duplicate keys, and keep a map from each value's path to its line, so
later validation errors can point into the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from factory.errors import InputError, Problem, read_input_text

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Located:
    """A parsed document and the 1-based line of every key and list item in it."""

    data: Any
    lines: Mapping[PathKey, int] = field(default_factory=dict)

    def line_of(self, path: PathKey) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def dotted(path: PathKey) -> str:
    """`('models', 0, 'hf')` -> `models[0].hf`, the way fields are named in messages."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def load_yaml(path: Path) -> Located:
    text = read_input_text(path, what="file", fix="pass an existing UTF-8 manifest, e.g. --matrix manifests/world.yaml")
    return parse_yaml(text, str(path))


def parse_yaml(text: str, filename: str) -> Located:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise InputError(
                [Problem(file=filename, field="", message="the file is empty", fix="start from manifests/world.yaml")]
            )
        lines: dict[PathKey, int] = {(): root.start_mark.line + 1}
        data = _plain(loader, root, (), lines, filename)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        column = "" if mark is None else f" (column {mark.column + 1})"
        raise InputError(
            [
                Problem(
                    file=filename,
                    field="",
                    line=line,
                    message=f"YAML syntax error{column}: {exc.problem or exc}",
                    fix="correct the YAML at that line; indentation and unclosed quotes or brackets "
                    "are the usual causes",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(
            [Problem(file=filename, field="", message=f"YAML error: {exc}", fix="correct the YAML")]
        ) from None
    finally:
        loader.dispose()
    return Located(data, lines)


def _plain(loader: yaml.SafeLoader, node: yaml.Node, path: PathKey, lines: dict[PathKey, int], filename: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise InputError(
                    [
                        Problem(
                            file=filename,
                            field=dotted(path),
                            line=line,
                            message=f"key {key!r} is not a string",
                            fix='quote the key, e.g. "' + str(key) + '":',
                        )
                    ]
                )
            if key in out:
                raise InputError(
                    [
                        Problem(
                            file=filename,
                            field=dotted((*path, key)),
                            line=line,
                            message=f"duplicate key {key!r} (first at line {lines[(*path, key)]})",
                            fix="give each entry a unique name, or merge the two entries",
                        )
                    ]
                )
            lines[(*path, key)] = line
            out[key] = _plain(loader, value_node, (*path, key), lines, filename)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            items.append(_plain(loader, item, (*path, index), lines, filename))
        return items
    return loader.construct_object(node, deep=True)
