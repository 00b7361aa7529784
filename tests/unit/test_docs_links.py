"""The README is a short front page and the reference lives under docs/: every relative link
in them reaches a file or folder of the repository, and every anchor a heading of the page it
names (GitHub's slugs), so moving or renaming a page or a heading cannot leave a dead link."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
README_MAX_LINES = 150

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target) and ![alt](target), with an optional "title"; text may hold one level of [].
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def prose(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation but - and _
    dropped, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a page has: its headings' slugs (a repeated one gets -1, -2, ...) and HTML anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose(path.read_text()):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(HTML_ANCHOR.findall(line))
    return found


def link_targets(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of every inline and reference link outside code."""
    for number, line in prose(path.read_text()):
        text = INLINE_CODE.sub("", line)
        for match in LINK.finditer(text):
            yield number, match.group(1)
        reference = REFERENCE.match(text)
        if reference:
            yield number, reference.group(1)


def broken_links(files: Iterable[Path], root: Path) -> list[str]:
    """'FILE:LINE: TARGET: why' for every relative link that reaches nothing."""
    root = root.resolve()
    problems = []
    for source in files:
        where = source.relative_to(root)
        for number, target in link_targets(source):
            if SCHEME.match(target):
                continue  # http(s):, mailto: and the like are not checked here
            raw_path, _, anchor = target.partition("#")
            path = unquote(raw_path)
            if not path:
                dest = source
            elif path.startswith("/"):
                dest = (root / path.lstrip("/")).resolve()
            else:
                dest = (source.parent / path).resolve()
            if not dest.is_relative_to(root):
                problems.append(f"{where}:{number}: {target}: leaves the repository")
            elif not dest.exists():
                problems.append(f"{where}:{number}: {target}: no such file or folder")
            elif anchor and dest.suffix == ".md" and dest.is_file() and unquote(anchor) not in anchors(dest):
                problems.append(f"{where}:{number}: {target}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


# --- the repository's own pages


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    files = doc_files(REPO)
    assert len(files) > 1, "docs/ holds no pages"
    assert broken_links(files, REPO) == []


def test_the_readme_is_a_short_front_page() -> None:
    lines = len(README.read_text().splitlines())
    assert lines < README_MAX_LINES, f"README.md has {lines} lines: move reference text into docs/"


def test_the_readme_links_every_page_under_docs() -> None:
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for _, target in link_targets(README)
        if not SCHEME.match(target)
    }
    pages = {p.resolve() for p in (REPO / "docs").glob("*.md")} | {
        p.resolve() for p in (REPO / "docs").glob("*/README.md")
    }
    assert sorted(str(p.relative_to(REPO)) for p in pages - linked) == []


def test_the_readme_keeps_the_two_commands_first() -> None:
    """The first bash block is the main job (tests/integration/test_readme_first_command.py
    runs it), and the test command .ci/run runs follows it."""
    blocks = bash_blocks(README.read_text())
    assert len(blocks) >= 2
    assert "factory build -m manifests/example.yaml --smoke --store example/store" in blocks[0]
    assert blocks[1].strip() == ".venv/bin/python -m pytest"


# --- the checker itself, on pages made for the purpose


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Releases (GitHub Actions)", "releases-github-actions"),
        ("The wheel toolchain: a real compiler in minutes", "the-wheel-toolchain-a-real-compiler-in-minutes"),
        ("Mirrors and single-file transfers", "mirrors-and-single-file-transfers"),
        ("The `tokenizer_model` file", "the-tokenizer_model-file"),
        ("See [the plan](plan.md) first", "see-the-plan-first"),
        ("Options and exit codes", "options-and-exit-codes"),
    ],
)
def test_slugs_follow_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def _pages(root: Path, pages: dict[str, str]) -> list[Path]:
    for name, text in pages.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return doc_files(root)


def test_good_links_pass(tmp_path: Path) -> None:
    files = _pages(
        tmp_path,
        {
            "README.md": "# x\n\n## Documentation\n\nSee [a](docs/a.md), [its part](docs/a.md#part-two-b), "
            "[here](#documentation), [folder](docs/), [web](https://example.com/missing.md), "
            '[mail](mailto:a@b.c), ![img](docs/a.md "title").\n\n[ref]: docs/a.md#part-two-b\n',
            "docs/a.md": "# A\n\n## Part two: b\n\n## Again\n\n## Again\n\n"
            "[back](../README.md#documentation), [second](#again-1), [code](../src/x.py#L3)\n",
            "src/x.py": "",
        },
    )
    assert broken_links(files, tmp_path) == []


def test_a_missing_file_is_caught(tmp_path: Path) -> None:
    files = _pages(tmp_path, {"README.md": "# x\n\nSee [the store](docs/store.md).\n", "docs/a.md": "# A\n"})
    assert broken_links(files, tmp_path) == ["README.md:3: docs/store.md: no such file or folder"]


def test_a_missing_anchor_in_another_page_is_caught(tmp_path: Path) -> None:
    files = _pages(
        tmp_path,
        {"README.md": "# x\n", "docs/a.md": "# A\n\n## Exit codes\n", "docs/b.md": "[codes](a.md#exit-code)\n"},
    )
    assert broken_links(files, tmp_path) == ["docs/b.md:1: a.md#exit-code: no heading with anchor #exit-code in a.md"]


def test_a_missing_anchor_in_the_same_page_is_caught(tmp_path: Path) -> None:
    files = _pages(tmp_path, {"README.md": "# x\n\n## Tests\n\n[tests](#test)\n", "docs/a.md": "# A\n"})
    assert broken_links(files, tmp_path) == ["README.md:5: #test: no heading with anchor #test in README.md"]


def test_a_broken_reference_link_is_caught(tmp_path: Path) -> None:
    files = _pages(tmp_path, {"README.md": "# x\n\n[plan]: docs/plan.md\n", "docs/a.md": "# A\n"})
    assert broken_links(files, tmp_path) == ["README.md:3: docs/plan.md: no such file or folder"]


def test_a_link_out_of_the_repository_is_caught(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (tmp_path / "outside.md").write_text("# out\n")
    files = _pages(repo, {"README.md": "# x\n\n[o](../outside.md)\n", "docs/a.md": "# A\n"})
    assert broken_links(files, repo) == ["README.md:3: ../outside.md: leaves the repository"]


def test_links_in_code_are_not_links(tmp_path: Path) -> None:
    files = _pages(
        tmp_path,
        {
            "README.md": "# x\n\n```bash\necho [a](missing.md)\n```\n\nInline `[b](missing.md)` too.\n",
            "docs/a.md": "# A\n",
        },
    )
    assert broken_links(files, tmp_path) == []
