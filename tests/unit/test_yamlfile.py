from __future__ import annotations

import pytest

from factory.errors import InputError
from factory.manifest.yamlfile import dotted, parse_yaml


def test_lines_are_recorded_for_keys_and_items() -> None:
    located = parse_yaml("a:\n  b: 1\nlist:\n  - x\n  - {c: 2}\n", "f.yaml")
    assert located.data == {"a": {"b": 1}, "list": ["x", {"c": 2}]}
    assert located.lines[("a",)] == 1
    assert located.lines[("a", "b")] == 2
    assert located.lines[("list", 1)] == 5
    assert located.lines[("list", 1, "c")] == 5
    # An unknown path falls back to its nearest known ancestor.
    assert located.line_of(("a", "b", "missing")) == 2


def test_duplicate_keys_are_rejected_with_both_lines() -> None:
    with pytest.raises(InputError) as info:
        parse_yaml("top:\n  k: 1\n  k: 2\n", "dup.yaml")
    problem = info.value.problems[0]
    assert problem.line == 3
    assert problem.field == "top.k"
    assert "first at line 2" in problem.message


def test_syntax_error_names_file_and_line() -> None:
    with pytest.raises(InputError) as info:
        parse_yaml("a: [1, 2\nb: 3\n", "broken.yaml")
    problem = info.value.problems[0]
    assert problem.file == "broken.yaml"
    assert problem.line == 2
    assert "YAML syntax error" in problem.message


def test_empty_document_and_non_string_keys() -> None:
    with pytest.raises(InputError, match="empty"):
        parse_yaml("", "e.yaml")
    with pytest.raises(InputError) as info:
        parse_yaml("1: x\n", "k.yaml")
    assert "not a string" in info.value.problems[0].message


def test_dotted_paths() -> None:
    assert dotted(("models", 0, "hf", "repo")) == "models[0].hf.repo"
    assert dotted(()) == ""
